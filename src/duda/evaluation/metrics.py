"""Per-class intersection/union accumulated over a whole evaluation set, and the mIoU it gives.

The metric sums a confusion matrix over every pixel of every image (not per-image means), as the
Cityscapes benchmark and the DAFormer/MIC code do. A class absent from both ground truth and
prediction over the whole set has an undefined IoU (NaN) and is left out of the mean; a class that
is only predicted, or only present in the ground truth, has IoU 0.

All numbers in :class:`EvalResult` are fractions in [0, 1]; :meth:`EvalResult.table` prints them
as percentages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duda.errors import DatasetError
from duda.files import write_text

# SYNTHIA has no terrain (9), truck (14) or train (16): mIoU16 leaves them out; mIoU13 also leaves
# out wall (3), fence (4) and pole (5), following the convention of the SYNTHIA→Cityscapes papers.
SYNTHIA16_EXCLUDED = (9, 14, 16)
SYNTHIA13_EXCLUDED = (3, 4, 5, 9, 14, 16)
CITYSCAPES_NUM_CLASSES = 19


def nanmean(values: np.ndarray) -> float:
    """Mean over the finite entries; NaN (without a warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def subset_miou(iou: np.ndarray, excluded: Sequence[int]) -> float:
    """nan-mean of the per-class IoU without the classes in ``excluded``."""
    keep = np.ones(len(iou), dtype=bool)
    keep[list(excluded)] = False
    return nanmean(np.asarray(iou, dtype=np.float64)[keep])


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclasses.dataclass
class EvalResult:
    """Scores of one evaluation; fractions in [0, 1], NaN where a class's score is undefined.

    ``miou16`` / ``miou13`` are the SYNTHIA→Cityscapes subsets and are only set for 19 classes.
    ``num_pixels`` counts the labelled (non-ignored) ground-truth pixels the scores rest on.
    """

    iou: np.ndarray
    acc: np.ndarray
    miou: float
    macc: float
    aacc: float
    miou16: float | None = None
    miou13: float | None = None
    num_pixels: int = 0

    @classmethod
    def from_counts(cls, intersection: np.ndarray, area_gt: np.ndarray, area_pred: np.ndarray) -> EvalResult:
        """Scores from per-class pixel counts summed over the set."""
        inter = np.asarray(intersection, dtype=np.float64)
        gt = np.asarray(area_gt, dtype=np.float64)
        pred = np.asarray(area_pred, dtype=np.float64)
        union = gt + pred - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, np.nan)
            acc = np.where(gt > 0, inter / gt, np.nan)
        total = gt.sum()
        is_cityscapes = len(iou) == CITYSCAPES_NUM_CLASSES
        return cls(
            iou=iou,
            acc=acc,
            miou=nanmean(iou),
            macc=nanmean(acc),
            aacc=float(inter.sum() / total) if total > 0 else float("nan"),
            miou16=subset_miou(iou, SYNTHIA16_EXCLUDED) if is_cityscapes else None,
            miou13=subset_miou(iou, SYNTHIA13_EXCLUDED) if is_cityscapes else None,
            num_pixels=int(total),
        )

    @property
    def num_classes(self) -> int:
        return len(self.iou)

    def _names(self, class_names: Sequence[str] | None) -> list[str]:
        if class_names is None:
            return [str(i) for i in range(self.num_classes)]
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names given for {self.num_classes} classes")
        return list(class_names)

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict (fractions; undefined scores as null, since JSON has no NaN)."""
        names = self._names(class_names)
        return {
            "miou": _nan_to_none(self.miou),
            "miou16": _nan_to_none(self.miou16),
            "miou13": _nan_to_none(self.miou13),
            "macc": _nan_to_none(self.macc),
            "aacc": _nan_to_none(self.aacc),
            "num_pixels": self.num_pixels,
            "per_class": {
                name: {"iou": _nan_to_none(float(i)), "acc": _nan_to_none(float(a))}
                for name, i, a in zip(names, self.iou, self.acc, strict=True)
            },
        }

    def table(self, class_names: Sequence[str] | None = None) -> str:
        """Aligned text table: one row per class (IoU, Acc in %), then the summary scores."""
        names = self._names(class_names)

        def pct(value: float | None) -> str:
            return "-" if value is None or math.isnan(value) else f"{100.0 * value:.2f}"

        width = max([len("Class"), len("mIoU16")] + [len(n) for n in names])
        lines = [f"{'Class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
        for name, i, a in zip(names, self.iou, self.acc, strict=True):
            lines.append(f"{name:<{width}}  {pct(i):>6}  {pct(a):>6}")
        lines.append("-" * (width + 16))
        summary = [("mIoU", self.miou), ("mIoU16", self.miou16), ("mIoU13", self.miou13)]
        summary += [("mAcc", self.macc), ("aAcc", self.aacc)]
        for label, value in summary:
            if value is not None:
                lines.append(f"{label:<{width}}  {pct(value):>6}")
        return "\n".join(lines)


def write_result_json(
    result: EvalResult,
    path: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``result.to_dict(class_names)`` (plus ``extra`` keys) as JSON, atomically."""
    data = dict(extra or {})
    data.update(result.to_dict(class_names))

    return write_text(Path(path), json.dumps(data, indent=2) + "\n")


class IoUMetric:
    """Accumulates per-class intersection, union and areas over many (prediction, label) pairs.

    The four count vectors are int64 torch tensors (``intersection``, ``union``, ``area_gt``,
    ``area_pred``) so that a distributed caller can ``all_reduce`` them in place (after moving
    the metric to the right device with :meth:`to`) before :meth:`compute`.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        zeros = lambda: torch.zeros(self.num_classes, dtype=torch.int64, device=self.device)  # noqa: E731
        self.intersection = zeros()
        self.union = zeros()
        self.area_gt = zeros()
        self.area_pred = zeros()

    def to(self, device: torch.device | str) -> IoUMetric:
        """Move the count tensors (e.g. to the GPU for an NCCL all-reduce); returns self."""
        self.device = torch.device(device)
        for name in ("intersection", "union", "area_gt", "area_pred"):
            setattr(self, name, getattr(self, name).to(self.device))
        return self

    def state_tensors(self) -> list[torch.Tensor]:
        """The count tensors, in a fixed order, for an in-place all-reduce (sum)."""
        return [self.intersection, self.union, self.area_gt, self.area_pred]

    def confusion(
        self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, name: str = ""
    ) -> torch.Tensor:
        """K×K confusion counts (rows ground truth, columns prediction) of one pair; ignored
        ground-truth pixels are skipped. The tensor lies on the input's device."""
        return self._counts(pred, gt, name)[:, : self.num_classes]

    def _counts(
        self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, name: str = ""
    ) -> torch.Tensor:
        """K×(K+1) confusion counts whose last column holds predictions outside 0..K-1 (which are
        wrong for every class: they count in the label's area but in no predicted area)."""
        k = self.num_classes
        where = f" in {name}" if name else ""
        if tuple(pred.shape) != tuple(gt.shape):
            raise DatasetError(
                f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(gt.shape)}{where}"
            )
        if isinstance(gt, np.ndarray) and isinstance(pred, np.ndarray):
            # numpy inputs (label files) are counted with numpy: no tensor conversion of big arrays
            gt_flat, pred_flat = gt.astype(np.int64).ravel(), pred.astype(np.int64).ravel()
            labelled = gt_flat != self.ignore_index
            bad = labelled & ((gt_flat < 0) | (gt_flat >= k))
            if bad.any():
                self._raise_bad_labels(np.unique(gt_flat[bad]).tolist(), where)
            gt_flat, pred_flat = gt_flat[labelled], pred_flat[labelled]
            pred_flat = np.where((pred_flat < 0) | (pred_flat >= k), k, pred_flat)
            counts = np.bincount(gt_flat * (k + 1) + pred_flat, minlength=k * (k + 1))
            return torch.from_numpy(counts.reshape(k, k + 1))
        gt_t = torch.as_tensor(gt).reshape(-1).long()
        pred_t = torch.as_tensor(pred, device=gt_t.device).reshape(-1).long()
        labelled = gt_t != self.ignore_index
        bad = labelled & ((gt_t < 0) | (gt_t >= k))
        if bool(bad.any()):
            self._raise_bad_labels(torch.unique(gt_t[bad]).tolist(), where)
        gt_t, pred_t = gt_t[labelled], pred_t[labelled]
        pred_t = torch.where((pred_t < 0) | (pred_t >= k), torch.full_like(pred_t, k), pred_t)
        counts = torch.bincount(gt_t * (k + 1) + pred_t, minlength=k * (k + 1))
        return counts.reshape(k, k + 1)

    def _raise_bad_labels(self, values: list[int], where: str) -> None:
        shown = ", ".join(str(v) for v in values[:10])
        raise DatasetError(
            f"label values {{{shown}}}{where} are outside the trainIds 0..{self.num_classes - 1} and "
            f"ignore {self.ignore_index}; labelIds instead of trainIds?"
        )

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, name: str = "") -> None:
        """Add one prediction/label pair (same shape, any batch layout; integer class ids)."""
        counts = self._counts(pred, gt, name).to(device=self.device, dtype=torch.int64)
        inter = torch.diagonal(counts[:, : self.num_classes])
        area_gt = counts.sum(dim=1)
        area_pred = counts[:, : self.num_classes].sum(dim=0)
        self.intersection += inter
        self.area_gt += area_gt
        self.area_pred += area_pred
        self.union += area_gt + area_pred - inter

    def merge(self, other: IoUMetric) -> IoUMetric:
        """Add another metric's counts into this one (e.g. from another worker); returns self."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge a metric of {other.num_classes} classes (ignore {other.ignore_index}) "
                f"into one of {self.num_classes} classes (ignore {self.ignore_index})"
            )
        for mine, theirs in zip(self.state_tensors(), other.state_tensors(), strict=True):
            mine += theirs.to(self.device)
        return self

    def compute(self) -> EvalResult:
        """Scores over everything accumulated so far."""
        return EvalResult.from_counts(
            self.intersection.cpu().numpy(), self.area_gt.cpu().numpy(), self.area_pred.cpu().numpy()
        )
