"""Predicting label maps for image files: trainId PNGs, colour PNGs and overlays.

One image's prediction (:func:`predict_label`, preprocessing, reading) lives in
:mod:`duda.inference.image`; it is re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from duda.errors import DatasetError
from duda.evaluation.evaluate import eval_mode
from duda.evaluation.visualize import save_png
from duda.files import ensure_dir
from duda.inference.image import (
    MAX_WHOLE_PIXELS,
    colorize,
    image_to_tensor,
    keep_ratio_size,
    load_rgb,
    overlay,
    predict_label,
)
from duda.inference.options import DEFAULT_CROP, DEFAULT_STRIDE
from duda.progress import progress_bar

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_WHOLE_PIXELS",
    "PredictFailure",
    "PredictReport",
    "image_to_tensor",
    "keep_ratio_size",
    "list_images",
    "load_rgb",
    "output_paths",
    "plan_outputs",
    "predict_images",
    "predict_label",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(path: str | os.PathLike[str]) -> list[Path]:
    """The image itself, or the images under a folder (recursive, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetError(f"input not found: {path} (expected an image file or a folder of images)")
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not found:
        raise DatasetError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return found


def output_paths(image: Path, out_dir: Path, root: Path | None = None) -> dict[str, Path]:
    """Where the three outputs of ``image`` go: ``<stem>_{trainIds,color,overlay}.png``, in
    ``out_dir`` mirroring the sub-folder of ``image`` below ``root`` (if given)."""
    folder = out_dir
    if root is not None:
        try:
            folder = out_dir / image.parent.relative_to(root)
        except ValueError:
            folder = out_dir
    return {kind: folder / f"{image.stem}_{kind}.png" for kind in ("trainIds", "color", "overlay")}


@dataclass
class PredictFailure:
    image: Path
    error: str


@dataclass
class PredictReport:
    """What ``predict_images`` did: the outputs per predicted image and the images that failed."""

    written: list[dict[str, Path]] = field(default_factory=list)
    failed: list[PredictFailure] = field(default_factory=list)
    windowed: int = 0  # images predicted with sliding windows because they were too large


def predict_images(
    model: nn.Module | Callable,
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    resize: tuple[int, int] | None = None,
    mode: str = "whole",
    crop: tuple[int, int] = DEFAULT_CROP,
    stride: tuple[int, int] = DEFAULT_STRIDE,
    overlay_alpha: float = 0.5,
    *,
    flip: bool = False,
    bf16: bool = False,
    device: torch.device | str = "cpu",
    root: str | os.PathLike[str] | None = None,
    progress: bool = False,
    strict: bool = True,
    report: PredictReport | None = None,
    max_whole_pixels: int = MAX_WHOLE_PIXELS,
) -> list[dict[str, Path]]:
    """Predict each image and write ``<stem>_trainIds.png`` (uint8 trainIds), ``<stem>_color.png``
    (palette colours) and ``<stem>_overlay.png`` (colours blended over the image with
    ``overlay_alpha``) into ``out_dir``; returns the written paths per image.

    ``model`` is an ``nn.Module`` (not moved: pass the ``device`` it lives on) or a numpy
    callable (ONNX). ``resize`` is the keep-ratio test scale (W, H), or None to predict at the
    original size. With ``root``, sub-folders below it are mirrored in ``out_dir``.

    With ``strict`` the first image that cannot be read stops everything (a ``DatasetError``);
    otherwise it is recorded in ``report.failed`` and the next image is predicted. Failures to
    write the outputs (disk full, read-only) always stop.
    """
    out = ensure_dir(out_dir, "output folder")
    report = report if report is not None else PredictReport()
    planned = plan_outputs(paths, out, Path(root) if root is not None else None)
    items: Any = progress_bar(list(zip(paths, planned, strict=True)), progress, desc="predict", unit="img")
    with eval_mode(model):
        for src, dst in items:
            try:
                rgb = load_rgb(src)
            except DatasetError as exc:
                if strict:
                    raise
                report.failed.append(PredictFailure(Path(src), str(exc)))
                continue
            big = mode == "whole" and _input_pixels(rgb, resize) > max_whole_pixels
            report.windowed += big
            label = predict_label(
                model, rgb, mean, std, resize, mode, crop, stride, flip=flip, bf16=bf16, device=device,
                max_whole_pixels=max_whole_pixels,
            )  # fmt: skip
            _write_outputs(dst, rgb, label, palette, overlay_alpha)
            del rgb, label
            report.written.append(dst)
    return report.written


def plan_outputs(
    paths: Sequence[str | os.PathLike[str]], out: Path, root: Path | None
) -> list[dict[str, Path]]:
    """:func:`output_paths` of every image; a DatasetError when two would write the same file."""
    planned = [output_paths(Path(p), out, root) for p in paths]
    seen: dict[Path, Path] = {}
    for src, dst in zip(paths, planned, strict=True):
        if dst["trainIds"] in seen:
            raise DatasetError(
                f"{seen[dst['trainIds']]} and {src} would both write {dst['trainIds']}; "
                "rename one or predict them into separate folders"
            )
        seen[dst["trainIds"]] = Path(src)
    return planned


def _write_outputs(
    dst: dict[str, Path], rgb: np.ndarray, label: np.ndarray, palette, overlay_alpha: float
) -> None:
    color = colorize(label, palette)
    save_png(dst["trainIds"], label)
    save_png(dst["color"], color)
    save_png(dst["overlay"], overlay(rgb, color, overlay_alpha))


def _input_pixels(rgb: np.ndarray, resize: tuple[int, int] | None) -> int:
    h, w = rgb.shape[:2]
    if resize is not None:
        w, h = keep_ratio_size(w, h, resize)
    return w * h
