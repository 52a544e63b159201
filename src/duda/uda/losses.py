"""Segmentation losses as the reference computes them (mmseg 0.16 conventions).

Logits are upsampled bilinearly (``align_corners=False``) to the label size before the loss.
Both ``weighted_ce`` and ``ce`` average over ALL ``B·H·W`` pixels, ignored ones counting as 0,
as mmseg 0.x (DAFormer, MIC) does for the source and the mix loss alike. Averaging the source
loss over labelled pixels only (``ce(..., average="valid")``) would scale it up by 1/(labelled
share) against the mix, MIC and feature-distance losses.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ._checks import UdaInputError, check_dim


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (``align_corners=False``) resize of ``B×K×h×w`` logits to ``size``; no-op if equal."""
    check_dim("logits", logits, 4, "B×K×H×W")
    if tuple(logits.shape[2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    check_dim("labels", labels, 3, "B×H×W")
    if labels.shape[0] != logits.shape[0]:
        raise UdaInputError(f"labels: batch {labels.shape[0]} differs from the logits' {logits.shape[0]}")
    if labels.is_floating_point():
        raise UdaInputError(f"labels: expected integer class ids, got dtype {labels.dtype}")


def pixel_ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Per-pixel cross-entropy ``B×H×W`` (0 at ignored pixels), logits resized to the labels."""
    _check_labels(logits, labels)
    logits = resize_logits(logits, tuple(labels.shape[1:]))
    return F.cross_entropy(logits.float(), labels.long(), reduction="none", ignore_index=ignore_index)


def weighted_ce(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None, ignore_index: int = 255
) -> torch.Tensor:
    """Pixel-weighted cross-entropy, averaged over all ``B·H·W`` pixels (ignored ones count as 0)."""
    loss = pixel_ce(logits, labels, ignore_index)
    if weight is not None:
        if weight.dim() == 4 and weight.shape[1] == 1:
            weight = weight[:, 0]
        if weight.shape != loss.shape:
            raise UdaInputError(
                f"pixel weight: expected shape {tuple(loss.shape)}, got {tuple(weight.shape)}"
            )
        loss = loss * weight.to(loss.dtype)
    return loss.mean()


def soft_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against a ``B×K×H×W`` target distribution, ``-Σ_k q_k log softmax(s)_k``
    per pixel (logits resized to the target), times the ``B×H×W`` pixel weight, averaged over
    all ``B·H·W`` pixels (as :func:`weighted_ce`; a pixel of weight 0 counts as 0)."""
    check_dim("logits", logits, 4, "B×K×H×W")
    check_dim("target", target, 4, "B×K×H×W")
    if target.shape[:2] != logits.shape[:2]:
        raise UdaInputError(
            f"soft ce: target {tuple(target.shape)} and logits {tuple(logits.shape)} differ in batch "
            "or classes"
        )
    logits = resize_logits(logits, tuple(target.shape[2:]))
    loss = -(target.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if weight is not None:
        if weight.shape != loss.shape:
            raise UdaInputError(
                f"pixel weight: expected shape {tuple(loss.shape)}, got {tuple(weight.shape)}"
            )
        loss = loss * weight.to(loss.dtype)
    return loss.mean()


def ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    average: Literal["valid", "all"] = "all",
) -> torch.Tensor:
    """Cross-entropy averaged over all pixels (``"all"``, mmseg 0.x) or valid pixels (``"valid"``).

    With no valid pixel the result is a zero connected to ``logits`` (never NaN).
    """
    if average not in ("valid", "all"):
        raise UdaInputError(f"ce average: expected 'valid' or 'all', got {average!r}")
    loss = pixel_ce(logits, labels, ignore_index)
    if average == "all":
        return loss.mean()
    valid = labels != ignore_index
    count = valid.sum()
    if count == 0:
        return logits.sum() * 0.0
    return loss.sum() / count


def kd_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` per pixel, averaged over (valid) pixels.

    The teacher logits are resized to the student's grid and treated as constants.
    """
    check_dim("student_logits", student_logits, 4, "B×K×H×W")
    check_dim("teacher_logits", teacher_logits, 4, "B×K×H×W")
    if temperature <= 0:
        raise UdaInputError(f"kd temperature: expected > 0, got {temperature}")
    if teacher_logits.shape[:2] != student_logits.shape[:2]:
        raise UdaInputError(
            f"kd: teacher logits {tuple(teacher_logits.shape)} and student logits "
            f"{tuple(student_logits.shape)} differ in batch or class count"
        )
    teacher = resize_logits(teacher_logits.detach(), tuple(student_logits.shape[2:]))
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    per_pixel = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    if valid is not None:
        if valid.dim() == 4:
            valid = valid[:, 0]
        valid = valid.bool()
        if valid.shape != per_pixel.shape:
            raise UdaInputError(
                f"kd valid mask: expected shape {tuple(per_pixel.shape)}, got {tuple(valid.shape)}"
            )
        if not valid.any():
            return student_logits.sum() * 0.0
        per_pixel = per_pixel[valid]
    return per_pixel.mean() * temperature**2
