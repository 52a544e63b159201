"""Target pseudo-labels and their confidence weight (method.md B.4).

``ŷ = argmax p``; the weight ``q`` is the fraction of pixels whose max probability reaches the
threshold — one scalar for the whole batch as in the DAFormer code, or one per image — spread
over a ``B×H×W`` map that the caller may zero where pseudo-labels are not trusted (DAFormer's
top/bottom rows, MIC/HRDA's image margins given by the data loader as ``valid``).
"""

from __future__ import annotations

import torch

from ._checks import UdaInputError, check_dim


@torch.no_grad()
def pseudo_label(
    probs: torch.Tensor,
    threshold: float = 0.968,
    per_image: bool = False,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels (``B×H×W`` int64) and confidence weights (``B×H×W`` float32) from probabilities.

    ``probs`` is ``B×K×H×W`` (softmax output, or fused teacher probabilities). The confidence
    fraction counts every pixel, including those that ``valid`` later zeroes (as the reference).
    ``valid`` (``B×H×W`` or ``B×1×H×W``, 1 = trusted) multiplies the weight.
    """
    check_dim("probs", probs, 4, "B×K×H×W")
    max_prob, labels = probs.detach().max(dim=1)
    # float32 for the comparison and the weight: bf16 cannot hold 0.968 or a fraction like 0.7342.
    confident = (max_prob.float() >= threshold).to(torch.float32)
    if per_image:
        fraction = confident.flatten(1).mean(dim=1).view(-1, 1, 1)
    else:
        fraction = confident.mean()
    weight = fraction.expand_as(confident).clone()
    if valid is not None:
        weight = weight * _as_map(valid, weight.shape).to(weight.dtype)
    return labels, weight


def ignore_rows_mask(
    shape: tuple[int, int, int], top: int = 15, bottom: int = 120, device: torch.device | str | None = None
) -> torch.Tensor:
    """A ``B×H×W`` float mask: 0 in the first ``top`` and last ``bottom`` rows, 1 elsewhere.

    DAFormer zeroes the pseudo-label weight there (Cityscapes ego-car and hood).
    """
    if len(shape) != 3:
        raise UdaInputError(f"ignore_rows_mask shape: expected (B, H, W), got {tuple(shape)}")
    if top < 0 or bottom < 0:
        raise UdaInputError(f"ignore_rows_mask: expected top, bottom >= 0, got top={top}, bottom={bottom}")
    mask = torch.ones(shape, device=device)
    if top > 0:
        mask[:, :top, :] = 0
    if bottom > 0:
        mask[:, max(shape[1] - bottom, 0) :, :] = 0
    return mask


def _as_map(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Accept ``B×H×W`` or ``B×1×H×W`` masks for a ``B×H×W`` weight map."""
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if tuple(mask.shape) != tuple(shape):
        raise UdaInputError(f"valid mask: expected shape {tuple(shape)} (B×H×W), got {tuple(mask.shape)}")
    return mask
