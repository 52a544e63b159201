"""ClassMix as in DACS (method.md B.5): paste half of the source classes onto the target.

For each image the mask is ``M = y_src ∈ picked`` where ``picked`` is ``ceil(n/2)`` classes drawn
without replacement from ``n`` candidate classes. The DACS code takes the candidates as the
unique labels of the WHOLE source batch for every image (a documented quirk, so an image may get
classes it does not contain); ``per_batch_classes=False`` takes each image's own classes.
The reference also counts the ignore label 255 as a candidate, so ignored source regions (with
their label 255, which no loss sees) are pasted in about half of the draws; so does this code by
default (``include_ignore=False`` leaves ignored regions to the target).
"""

from __future__ import annotations

import math

import torch

from ._checks import UdaInputError, check_dim


def pick_half(classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``ceil(n/2)`` of the ``n`` given classes, drawn without replacement from ``generator``."""
    n = classes.numel()
    order = torch.randperm(n, generator=generator, device=generator.device)
    order = order.to(classes.device, non_blocking=True)  # (a blocking copy would wait for the GPU)
    return classes[order[: math.ceil(n / 2)]]


@torch.no_grad()
def classmix_masks(
    src_gt: torch.Tensor,
    generator: torch.Generator,
    per_batch_classes: bool = True,
    ignore_index: int = 255,
    include_ignore: bool = True,
) -> torch.Tensor:
    """``B×1×H×W`` float masks, 1 where the source pixel is pasted, from source labels ``B×H×W``."""
    check_dim("src_gt", src_gt, 3, "B×H×W")
    if src_gt.is_floating_point():
        raise UdaInputError(f"src_gt: expected integer class labels, got dtype {src_gt.dtype}")
    batch_classes = _candidate_classes(src_gt, ignore_index, include_ignore)
    masks = []
    for label in src_gt:
        own = per_batch_classes is False
        candidates = _candidate_classes(label, ignore_index, include_ignore) if own else batch_classes
        picked = pick_half(candidates, generator)
        masks.append(torch.isin(label, picked))
    return torch.stack(masks).unsqueeze(1).to(torch.float32)


def _candidate_classes(labels: torch.Tensor, ignore_index: int, include_ignore: bool) -> torch.Tensor:
    classes = torch.unique(labels)
    return classes if include_ignore else classes[classes != ignore_index]


def mix(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``M·a + (1−M)·b`` for images (``B×C×H×W``), labels or weights (``B×H×W``).

    ``mask`` is ``B×1×H×W`` (or ``B×H×W``); integer tensors (labels) are selected, not blended.
    """
    if a.shape != b.shape:
        raise UdaInputError(f"mix: the two inputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    m = mask
    if a.dim() == m.dim() - 1 and m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    elif a.dim() == m.dim() + 1:
        m = m.unsqueeze(1)
    # A plain check: torch.broadcast_shapes costs about a second on its first call.
    fits = m.dim() == a.dim() and all(ms in (1, s) for ms, s in zip(m.shape, a.shape, strict=True))
    if not fits:
        raise UdaInputError(f"mix: mask of shape {tuple(mask.shape)} does not fit {tuple(a.shape)}")
    if a.is_floating_point():
        m = m.to(a.dtype)
        return m * a + (1 - m) * b
    return torch.where(m.bool(), a, b)
