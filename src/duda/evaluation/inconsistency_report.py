"""Does the label-free inconsistency I'_c track the true per-class gap between two models?

DUDA weights poorly adapted classes by ``I'_c``, computed from the large and small models'
predictions alone (method.md Part C). Where target labels exist, this module puts the true
IoU gap (large − small) beside it with their Spearman rank correlation (the paper's Fig. 4a).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from duda.evaluation.metrics import IoUMetric
from duda.inference.modes import infer_whole, upsample_logits
from duda.uda.inconsistency import InconsistencyMeter, rank_correlation


@dataclass
class InconsistencyReport:
    classes: list[str]
    inconsistency: np.ndarray  # I_c
    normalised: np.ndarray  # I'_c
    iou_large: np.ndarray | None  # per-class IoU against labels (NaN where undefined)
    iou_small: np.ndarray | None
    spearman: float | None  # rank correlation of I'_c and the IoU gap over classes with both defined
    images: int

    @property
    def gap(self) -> np.ndarray | None:
        if self.iou_large is None or self.iou_small is None:
            return None
        return self.iou_large - self.iou_small

    def to_dict(self) -> dict:
        def clean(a):
            return None if a is None else [None if not np.isfinite(v) else round(float(v), 6) for v in a]

        return {
            "images": self.images,
            "spearman": self.spearman,
            "per_class": {
                name: {
                    "I": clean(self.inconsistency)[i],
                    "I_norm": clean(self.normalised)[i],
                    "iou_large": None if self.iou_large is None else clean(self.iou_large)[i],
                    "iou_small": None if self.iou_small is None else clean(self.iou_small)[i],
                    "gap": None if self.gap is None else clean(self.gap)[i],
                }
                for i, name in enumerate(self.classes)
            },
        }

    def table(self) -> str:
        head = f"{'class':<16}{'I_c':>8}{'I_norm':>8}"
        if self.gap is not None:
            head += f"{'IoU L':>8}{'IoU S':>8}{'gap':>8}"
        lines = [head, "-" * len(head)]
        for i, name in enumerate(self.classes):
            row = f"{name:<16}{self.inconsistency[i]:>8.3f}{self.normalised[i]:>8.3f}"
            if self.gap is not None:
                row += (
                    f"{100 * self.iou_large[i]:>8.1f}{100 * self.iou_small[i]:>8.1f}{100 * self.gap[i]:>8.1f}"
                )
            lines.append(row)
        if self.spearman is not None:
            lines.append(f"Spearman rank correlation of I'_c and the IoU gap: {self.spearman:.3f}")
        return "\n".join(lines)


@torch.no_grad()
def inconsistency_report(
    large: nn.Module,
    small: nn.Module,
    loader: Iterable[dict],
    classes: Sequence[str],
    device: torch.device | str = "cpu",
) -> InconsistencyReport:
    """I_c of the two models' predictions over ``loader``; true IoUs where samples carry ``gt``."""
    k = len(classes)
    meter = InconsistencyMeter(k)
    metric_l, metric_s = IoUMetric(k), IoUMetric(k)
    labelled, n = True, 0
    for sample in loader:
        img = sample["img"].to(device)
        if img.ndim == 3:
            img = img.unsqueeze(0)
        logits_l, logits_s = infer_whole(large, img), infer_whole(small, img)
        meter.update(logits_l.argmax(1).cpu(), logits_s.argmax(1).cpu())
        n += img.shape[0]
        gt = sample.get("gt")
        if gt is None:
            labelled = False
            continue
        gt = gt.view(-1, *gt.shape[-2:])
        size = tuple(gt.shape[-2:])
        metric_l.update(upsample_logits(logits_l, size).argmax(1).cpu(), gt)
        metric_s.update(upsample_logits(logits_s, size).argmax(1).cpu(), gt)
    res = meter.compute()
    iou_l = iou_s = None
    rho = None
    if labelled and n:
        iou_l = np.asarray(metric_l.compute().iou, dtype=np.float64)
        iou_s = np.asarray(metric_s.compute().iou, dtype=np.float64)
        gap = torch.as_tensor(iou_l - iou_s)
        r = rank_correlation(res.normalised.double(), gap)
        rho = None if not np.isfinite(r) else float(r)
    return InconsistencyReport(
        classes=list(classes),
        inconsistency=res.values.double().numpy(),
        normalised=res.normalised.double().numpy(),
        iou_large=iou_l,
        iou_small=iou_s,
        spearman=rho,
        images=n,
    )


def plot_report(report: InconsistencyReport, path: str | Path, title: str = "") -> Path:
    """Bar chart: I'_c per class, and the true IoU gap beside it where known (Fig. 4a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(report.classes))
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.4 if report.gap is not None else 0.8
    ax.bar(
        x - (width / 2 if report.gap is not None else 0), report.normalised, width, label="I'_c (no labels)"
    )
    if report.gap is not None:
        gap = np.nan_to_num(report.gap)
        peak = np.max(np.abs(gap)) or 1.0
        ax.bar(x + width / 2, gap / peak, width, label="true IoU gap, large − small (scaled to max 1)")
    ax.set_xticks(x, report.classes, rotation=60, ha="right")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend()
    extra = f" — Spearman ρ = {report.spearman:.2f}" if report.spearman is not None else ""
    ax.set_title((title or "Per-class inconsistency") + extra)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
