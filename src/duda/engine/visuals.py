"""DAFormer-style debug sheets of a training step: one row per sample of the batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from duda.evaluation.visualize import make_grid, save_png
from duda.inference.image import colorize

# (key in the step's visuals, title, kind)
COLUMNS = [
    ("src_img", "source", "image"),
    ("src_gt", "source label", "label"),
    ("src_pred", "student on source", "label"),
    ("tgt_img", "target", "image"),
    ("pseudo_label", "pseudo-label", "label"),
    ("pseudo_weight", "pseudo weight", "weight"),
    ("mix_img", "mixed (augmented)", "image"),
    ("mix_label", "mixed label", "label"),
    ("mix_pred", "student on mixed", "label"),
    ("small_mix_pred", "small student on mixed", "label"),
]


def to_uint8_image(img: torch.Tensor) -> np.ndarray:
    """3×H×W normalised tensor -> H×W×3 uint8."""
    mean = torch.as_tensor(np.asarray(IMAGENET_MEAN, dtype=np.float32)).view(3, 1, 1)
    std = torch.as_tensor(np.asarray(IMAGENET_STD, dtype=np.float32)).view(3, 1, 1)
    x = img.detach().float().cpu() * std + mean
    return x.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def debug_rows(visuals: dict, palette: np.ndarray, max_rows: int = 2) -> tuple[list, list]:
    rows, titles = [], []
    n = min(max_rows, next(iter(visuals.values())).shape[0])
    for i in range(n):
        row, trow = [], []
        for key, title, kind in COLUMNS:
            if key not in visuals:
                continue
            v = visuals[key][i].detach().cpu()
            if kind == "image":
                pic = to_uint8_image(v)
            elif kind == "label":
                pic = colorize(v.numpy().astype(np.int64), palette)
            else:
                pic = (v.float().clamp(0, 1) * 255).round().byte().numpy()
            row.append(pic)
            trow.append(title)
        rows.append(row)
        titles.append(trow)
    return rows, titles


def save_debug_grid(visuals: dict, path: str | Path, palette: np.ndarray) -> Path:
    rows, titles = debug_rows(visuals, palette)
    return save_png(path, make_grid(rows, titles))
