"""Pictures of label maps: colour maps, overlays, titled grids, and atomic PNG writing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from duda.files import atomic_path
from duda.inference.image import checked_rgb, colorize, overlay

__all__ = ["colorize", "make_grid", "overlay", "save_png"]


def make_grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    titles: Sequence[Sequence[str]] | None = None,
    pad: int = 4,
    title_height: int = 24,
) -> np.ndarray:
    """One RGB uint8 sheet of pictures in rows (None leaves a blank cell).

    Every cell gets the size of the largest picture (smaller ones are placed top-left, not
    scaled, so pixels stay comparable); ``titles`` (same layout as ``rows``) are written above
    each cell in white on a dark band.
    """
    if not rows or not any(len(r) for r in rows):
        raise ValueError("make_grid needs at least one picture")
    if titles is not None and [len(t) for t in titles] != [len(r) for r in rows]:
        raise ValueError("titles must have the same layout (rows × columns) as the pictures")
    cells = [[None if c is None else checked_rgb(c) for c in row] for row in rows]
    present = [c for row in cells for c in row if c is not None]
    cell_h = max(c.shape[0] for c in present)
    cell_w = max(c.shape[1] for c in present)
    band = title_height if titles is not None else 0
    n_rows, n_cols = len(cells), max(len(r) for r in cells)
    sheet = np.zeros(
        (n_rows * (cell_h + band) + (n_rows + 1) * pad, n_cols * cell_w + (n_cols + 1) * pad, 3),
        dtype=np.uint8,
    )
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            y = pad + r * (cell_h + band + pad)
            x = pad + c * (cell_w + pad)
            if titles is not None and titles[r][c]:
                # Scale the font to the band so titles stay legible on small and large sheets.
                scale = max(band / 40.0, 0.3)
                cv2.putText(
                    sheet, str(titles[r][c]), (x + 2, y + band - max(band // 4, 2)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA,
                )  # fmt: skip
            if cell is not None:
                sheet[y + band : y + band + cell.shape[0], x : x + cell.shape[1]] = cell
    return sheet


def save_png(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a uint8 ``H×W`` (grey / trainIds) or ``H×W×3`` (RGB) PNG atomically (temp + rename),
    creating parent folders; a crash never leaves a truncated file behind."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"save_png expects uint8 H×W or H×W×3, got {array.dtype} {array.shape}")
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
