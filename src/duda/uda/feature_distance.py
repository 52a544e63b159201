"""ImageNet feature distance on thing classes (DAFormer; method.md B.3).

The source label is pooled to the feature grid by a class histogram per cell (the ignore label
counts as an extra class, so a cell that is mostly ignore is dropped); a cell is kept when its
majority class covers at least ``min_ratio`` of the cell and is a thing class. The loss is the
mean over kept cells of the L2 norm over channels of ``F − F_imnet``, times ``weight``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import UdaInputError, check_dim

THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


@torch.no_grad()
def downscale_label_ratio(
    gt: torch.Tensor,
    feat_hw: tuple[int, int],
    min_ratio: float = 0.75,
    num_classes: int = 19,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Pool ``B×H×W`` labels to ``B×h×w`` by per-cell majority; ``ignore_index`` where unsure.

    The cell side is ``ceil(H/h)`` (the same along both axes); labels that do not fill the grid
    are padded with ``ignore_index`` (feature maps of size ``ceil(H/stride)``).
    """
    check_dim("gt", gt, 3, "B×H×W")
    h, w = feat_hw
    if h < 1 or w < 1:
        raise UdaInputError(f"feature size: expected positive (h, w), got {feat_hw}")
    cell = math.ceil(gt.shape[1] / h)
    if cell != math.ceil(gt.shape[2] / w) or cell < 1:
        raise UdaInputError(
            f"feature distance: label {tuple(gt.shape[1:])} and features {tuple(feat_hw)} "
            "do not share one stride"
        )
    labels = gt.long().clone()
    outside = (labels < 0) | (labels >= num_classes)  # ignore (and any stray id) -> substitute class
    labels.masked_fill_(outside, num_classes)  # (assigning through a boolean mask syncs on a GPU)
    labels = F.pad(labels, (0, w * cell - gt.shape[2], 0, h * cell - gt.shape[1]), value=num_classes)
    one_hot = F.one_hot(labels, num_classes + 1).permute(0, 3, 1, 2).float()
    share, majority = F.avg_pool2d(one_hot, kernel_size=cell).max(dim=1)
    majority.masked_fill_((majority == num_classes) | (share < min_ratio), ignore_index)
    return majority


@torch.no_grad()
def thing_cell_mask(
    gt: torch.Tensor,
    feat_hw: tuple[int, int],
    thing_classes: Sequence[int] = THING_CLASSES,
    min_ratio: float = 0.75,
    ignore_index: int = 255,
    num_classes: int = 19,
) -> torch.Tensor:
    """``B×h×w`` bool: cells whose pooled label is a thing class (with share ≥ ``min_ratio``)."""
    pooled = downscale_label_ratio(gt, feat_hw, min_ratio, num_classes, ignore_index)
    things = torch.as_tensor(list(thing_classes), dtype=pooled.dtype).to(pooled.device, non_blocking=True)
    return torch.isin(pooled, things)


def feature_distance_loss(
    feat: torch.Tensor, feat_imnet: torch.Tensor, mask: torch.Tensor | None = None, weight: float = 0.005
) -> torch.Tensor:
    """``weight ·`` mean over masked cells of ``‖feat − feat_imnet‖₂`` (over channels).

    ``feat_imnet`` is treated as a constant. An empty mask gives a zero that still belongs to
    ``feat``'s graph (backward works, gradient 0) instead of the reference's NaN.
    """
    check_dim("feat", feat, 4, "B×C×h×w")
    if feat.shape != feat_imnet.shape:
        raise UdaInputError(
            f"feature distance: student features {tuple(feat.shape)} and ImageNet features "
            f"{tuple(feat_imnet.shape)} differ in shape"
        )
    distance = torch.linalg.vector_norm(feat - feat_imnet.detach(), ord=2, dim=1)
    if mask is not None:
        if mask.dim() == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if mask.shape != distance.shape:
            raise UdaInputError(
                f"feature distance mask: expected shape {tuple(distance.shape)}, got {tuple(mask.shape)}"
            )
        distance = distance[mask.bool()]
    if distance.numel() == 0:
        return feat.sum() * 0.0
    return weight * distance.mean()
