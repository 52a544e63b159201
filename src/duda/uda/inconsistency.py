"""Class-wise inconsistency between a large and a small model (DUDA stage 2; method.md C).

``I_c = 1 − |{A=c} ∩ {B=c}| / |{A=c} ∪ {B=c}|`` accumulated over the target images (no labels),
``I'_c = I_c / max_k I_k`` and a target pixel weight ``1 + γ·I'_{ŷ}``. Classes that neither model
predicts get ``I_c = 0`` and are reported as absent, so they do not raise the weight of anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import UdaInputError


def class_confusion_counts(
    pred_a: torch.Tensor, pred_b: torch.Tensor, num_classes: int, ignore: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class ``|A=c ∩ B=c|`` and ``|A=c ∪ B=c|`` (int64, length ``num_classes``).

    ``pred_a``/``pred_b`` are class-id maps of equal shape; ``ignore`` is an optional bool mask of
    the same shape whose True pixels are skipped. Ids outside ``[0, num_classes)`` count for no class.
    """
    if pred_a.shape != pred_b.shape:
        raise UdaInputError(
            f"inconsistency: predictions differ in shape: {tuple(pred_a.shape)} vs {tuple(pred_b.shape)}"
        )
    if num_classes < 1:
        raise UdaInputError(f"inconsistency num_classes: expected >= 1, got {num_classes}")
    a, b = pred_a.reshape(-1).long(), pred_b.reshape(-1).long()
    if ignore is not None:
        if ignore.shape != pred_a.shape:
            raise UdaInputError(
                f"inconsistency ignore mask: expected shape {tuple(pred_a.shape)}, got {tuple(ignore.shape)}"
            )
        skip = ignore.reshape(-1).bool()
        a, b = a.masked_fill(skip, -1), b.masked_fill(skip, -1)  # -1: counted for no class
    count_a = _class_histogram(a, num_classes)
    count_b = _class_histogram(b, num_classes)
    inter = _class_histogram(torch.where(a == b, a, -1), num_classes)
    return inter, count_a + count_b - inter


def _class_histogram(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels per class id in ``[0, num_classes)``; other ids count for none. A scatter-add into
    fixed slots, not boolean indexing and bincount, whose output sizes make a GPU wait."""
    slots = torch.where((ids >= 0) & (ids < num_classes), ids, num_classes)
    counts = torch.zeros(num_classes + 1, dtype=torch.long, device=ids.device)
    return counts.scatter_add_(0, slots, torch.ones_like(slots))[:num_classes]


def inconsistency(intersection: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """``I_c = 1 − inter_c/union_c`` (float64); 0 for classes with an empty union (see ``absent``)."""
    if intersection.shape != union.shape:
        raise UdaInputError(
            f"inconsistency: intersection {tuple(intersection.shape)} and union {tuple(union.shape)} differ"
        )
    inter, uni = intersection.double(), union.double()
    values = 1.0 - inter / uni.clamp_min(1.0)
    return torch.where(uni > 0, values, torch.zeros_like(values))


def absent_classes(union: torch.Tensor) -> torch.Tensor:
    """Bool mask of classes predicted by neither model (their ``I_c`` is set to 0)."""
    return union == 0


def normalised_inconsistency(values: torch.Tensor) -> torch.Tensor:
    """``I'_c = I_c / max_k I_k``; all zeros when the maximum is 0 (the models fully agree)."""
    peak = values.max() if values.numel() else values.new_tensor(0.0)
    if peak <= 0:
        return torch.zeros_like(values)
    return values / peak


def pixel_weights(
    labels: torch.Tensor,
    normalised: torch.Tensor,
    gamma: float = 1.0,
    ignore_index: int = 255,
    ignore_weight: float = 1.0,
) -> torch.Tensor:
    """``1 + γ·I'_{label}`` per pixel (float32, same shape as ``labels``).

    Pixels labelled ``ignore_index`` (or any id outside the table) get ``ignore_weight``: 1 by
    default, since the cross-entropy ignores them anyway and 1 leaves any other use unchanged.
    """
    if labels.is_floating_point():
        raise UdaInputError(f"pixel_weights labels: expected integer class ids, got dtype {labels.dtype}")
    table = normalised.to(device=labels.device, dtype=torch.float32)
    num_classes = table.numel()
    known = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    index = torch.where(known, labels.long(), torch.zeros_like(labels, dtype=torch.long))
    weights = 1.0 + gamma * table[index]
    return torch.where(known, weights, torch.full_like(weights, ignore_weight))


@dataclass
class InconsistencyResult:
    """What ``InconsistencyMeter.compute`` returns (all length ``num_classes``)."""

    intersection: torch.Tensor
    union: torch.Tensor
    values: torch.Tensor  # I_c
    normalised: torch.Tensor  # I'_c
    absent: torch.Tensor  # bool: predicted by neither model


class InconsistencyMeter:
    """Accumulates intersection/union of two models' predictions over batches (on the CPU)."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise UdaInputError(f"InconsistencyMeter num_classes: expected >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.intersection = torch.zeros(self.num_classes, dtype=torch.long)
        self.union = torch.zeros(self.num_classes, dtype=torch.long)

    def update(self, pred_a: torch.Tensor, pred_b: torch.Tensor, ignore: torch.Tensor | None = None) -> None:
        """Add one batch of class-id maps (e.g. argmax of the large and the small model)."""
        inter, union = class_confusion_counts(pred_a, pred_b, self.num_classes, ignore)
        self.intersection += inter.cpu()
        self.union += union.cpu()

    def compute(self) -> InconsistencyResult:
        values = inconsistency(self.intersection, self.union)
        return InconsistencyResult(
            intersection=self.intersection.clone(),
            union=self.union.clone(),
            values=values,
            normalised=normalised_inconsistency(values),
            absent=absent_classes(self.union),
        )


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given their average rank (as Spearman's ρ requires)."""
    order = torch.argsort(values, stable=True)
    sorted_vals = values[order]
    ranks = torch.empty_like(values)
    start = 0
    n = values.numel()
    while start < n:
        end = start
        while end + 1 < n and sorted_vals[end + 1] == sorted_vals[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ between two 1-D sequences, skipping pairs with a NaN; NaN if undefined.

    Undefined means fewer than two pairs or a constant sequence.
    """
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.numel() != y.numel():
        raise UdaInputError(f"rank_correlation: sequences of different lengths {x.numel()} and {y.numel()}")
    keep = ~(torch.isnan(x) | torch.isnan(y))
    x, y = x[keep], y[keep]
    if x.numel() < 2:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = torch.sqrt((rx * rx).sum() * (ry * ry).sum())
    if denom == 0:
        return float("nan")
    return float((rx * ry).sum() / denom)
