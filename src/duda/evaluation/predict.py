"""Predicting label maps for image files: trainId PNGs, colour PNGs and overlays.

Each image is resized (keeping its aspect ratio) to the model's test scale, normalised, predicted
(whole or sliding window) and the logits upsampled to the image's original size, so the outputs
match the input pixel for pixel whatever its size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from duda.errors import DatasetError
from duda.evaluation.evaluate import eval_mode
from duda.evaluation.inference import argmax_upsampled, infer, slide_labels
from duda.evaluation.visualize import colorize, overlay, save_png
from duda.files import ensure_dir
from duda.progress import progress_bar

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def keep_ratio_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(W, H) after an mmseg-style keep-ratio resize to ``scale`` = (W, H): the largest factor
    that fits the long side within max(scale) and the short side within min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(width, height), short_edge / min(width, height))
    return max(int(width * factor + 0.5), 1), max(int(height * factor + 0.5), 1)


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as ``H×W×3`` uint8 RGB (grey and RGBA are converted)."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read as an image ({exc})") from None


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


def image_to_tensor(
    rgb: np.ndarray, mean: Sequence[float], std: Sequence[float], resize: tuple[int, int] | None
) -> torch.Tensor:
    """``1×3×h×w`` float32 model input: optional keep-ratio resize, then (x - mean) / std in
    0–255 units."""
    if resize is not None:
        h, w = rgb.shape[:2]
        new_w, new_h = keep_ratio_size(w, h, resize)
        if (new_w, new_h) != (w, h):
            rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    x = torch.tensor(rgb, dtype=torch.float32).permute(2, 0, 1)  # a copy: inputs may be read-only
    mean_t = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
    std_t = torch.tensor([float(s) for s in std]).view(3, 1, 1)
    return x.sub_(mean_t).div_(std_t).unsqueeze(0)  # in place: one float copy of a large image


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


#: Whole-image inputs above this many pixels (without a test-scale resize) are predicted with
#: sliding windows instead, so the network never sees an unbounded image (see ``predict_label``).
MAX_WHOLE_PIXELS = 4096 * 2048


def predict_label(
    model: nn.Module | Callable,
    rgb: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    resize: tuple[int, int] | None = None,
    mode: str = "whole",
    crop: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
    *,
    flip: bool = False,
    bf16: bool = False,
    device: torch.device | str = "cpu",
    max_whole_pixels: int = MAX_WHOLE_PIXELS,
) -> np.ndarray:
    """uint8 ``H×W`` trainId map of one RGB image at its original size, in bounded memory.

    The network sees the image resized to ``resize`` (the model's test scale) when given; an
    input that is still larger than ``max_whole_pixels`` in ``whole`` mode (e.g. ``--no-resize``
    on a 48-megapixel photo) is predicted with sliding windows of ``crop``/``stride``, holding
    logits for one band of windows at a time. The logits are then upsampled to the original
    size and reduced to labels in strips of rows, never as one full-size ``K×H×W`` tensor."""
    x = image_to_tensor(rgb, mean, std, resize).to(device)
    out_hw = tuple(rgb.shape[:2])
    in_pixels = x.shape[-2] * x.shape[-1]
    if mode == "slide" or (mode == "whole" and in_pixels > max_whole_pixels):
        if tuple(x.shape[-2:]) == out_hw:
            return slide_labels(model, x, crop, stride, flip=flip, bf16=bf16)[0].cpu().numpy()
        logits = infer(model, x, None, mode="slide", crop=crop, stride=stride, flip=flip, bf16=bf16)
    else:
        logits = infer(model, x, None, mode=mode, crop=crop, stride=stride, flip=flip, bf16=bf16)
    return argmax_upsampled(logits, out_hw)[0].cpu().numpy()


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
    crop: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
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
    root_path = Path(root) if root is not None else None
    planned = [output_paths(Path(p), out, root_path) for p in paths]
    seen: dict[Path, Path] = {}
    for src, dst in zip(paths, planned, strict=True):
        if dst["trainIds"] in seen:
            raise DatasetError(
                f"{seen[dst['trainIds']]} and {src} would both write {dst['trainIds']}; "
                "rename one or predict them into separate folders"
            )
        seen[dst["trainIds"]] = Path(src)
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
            color = colorize(label, palette)
            save_png(dst["trainIds"], label)
            save_png(dst["color"], color)
            save_png(dst["overlay"], overlay(rgb, color, overlay_alpha))
            del rgb, label, color
            report.written.append(dst)
    return report.written


def _input_pixels(rgb: np.ndarray, resize: tuple[int, int] | None) -> int:
    h, w = rgb.shape[:2]
    if resize is not None:
        w, h = keep_ratio_size(w, h, resize)
    return w * h
