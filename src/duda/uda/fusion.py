"""Multi-teacher fusion (DUDA; method.md C): ``p̄ = Σ_k w_k · softmax(T_k(x))``.

Weights are normalised to sum to 1 (equal by default). Teachers may have different output
strides: their logits are resized bilinearly to one size before the softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import UdaInputError
from .losses import resize_logits


def normalised_weights(count: int, weights: Sequence[float] | None = None) -> list[float]:
    """``count`` non-negative weights scaled to sum 1; equal weights when ``weights`` is None."""
    if count < 1:
        raise UdaInputError("teacher fusion: expected at least one teacher, got none")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise UdaInputError(
            f"teacher fusion weights: expected {count} weights (one per teacher), got {len(weights)}"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UdaInputError(
            f"teacher fusion weights: expected non-negative weights with a positive sum, got {weights}"
        )
    total = sum(weights)
    return [w / total for w in weights]


def fuse_probs(prob_list: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Weighted average of ``B×K×H×W`` probability maps (all of one shape)."""
    w = normalised_weights(len(prob_list), weights)
    first = prob_list[0]
    for index, probs in enumerate(prob_list):
        if probs.dim() != 4 or probs.shape != first.shape:
            raise UdaInputError(
                f"teacher fusion: teacher {index} gives shape {tuple(probs.shape)}, "
                f"expected {tuple(first.shape)} (B×K×H×W, equal for all teachers)"
            )
    fused = torch.zeros_like(first, dtype=torch.float32)
    for weight, probs in zip(w, prob_list, strict=True):
        fused = fused + weight * probs.float()
    return fused


def fuse_teacher_logits(
    logits_list: Sequence[torch.Tensor], out_size: tuple[int, int], weights: Sequence[float] | None = None
) -> torch.Tensor:
    """Resize each teacher's ``B×K×h×w`` logits to ``out_size``, softmax, and fuse (``B×K×H×W``)."""
    if len(logits_list) == 0:
        raise UdaInputError("teacher fusion: expected at least one teacher, got none")
    classes = {tuple(logits.shape[:2]) for logits in logits_list if logits.dim() == 4}
    if len(classes) != 1 or any(logits.dim() != 4 for logits in logits_list):
        shapes = [tuple(logits.shape) for logits in logits_list]
        raise UdaInputError(
            f"teacher fusion: expected B×K×h×w logits with one B and K for all teachers, got {shapes}"
        )
    probs = [F.softmax(resize_logits(logits.detach().float(), out_size), dim=1) for logits in logits_list]
    return fuse_probs(probs, weights)
