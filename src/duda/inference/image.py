"""One image through a network: reading, the model's preprocessing, a label map at the image's
size in bounded memory, and its colours.

Each image is resized (keeping its aspect ratio) to the model's test scale, normalised, predicted
(whole or sliding window) and the logits upsampled to the image's original size, so the outputs
match the input pixel for pixel whatever its size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from duda.errors import DatasetError
from duda.inference.modes import argmax_upsampled, infer, slide_labels
from duda.inference.options import DEFAULT_CROP, DEFAULT_STRIDE


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
    crop: tuple[int, int] = DEFAULT_CROP,
    stride: tuple[int, int] = DEFAULT_STRIDE,
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


def colorize(label: np.ndarray, palette: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """RGB ``H×W×3`` uint8 picture of a trainId map; ignore (255) and unknown ids are black."""
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    # A 256-entry lookup table makes any uint8 id safe: ids beyond the palette stay black.
    lut = np.zeros((256, 3), dtype=np.uint8)
    n = min(len(pal), 255)
    lut[:n] = pal[:n]
    label = np.asarray(label)
    if label.dtype != np.uint8:
        label = np.where((label < 0) | (label > 255), 255, label).astype(np.uint8)
    return lut[label]


def checked_rgb(img: np.ndarray) -> np.ndarray:
    """``img`` as ``H×W×3`` uint8 (grey repeated); ValueError for another dtype or shape."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {img.dtype}")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ValueError(f"expected an H×W or H×W×3 image, got shape {img.shape}")


def overlay(
    img: np.ndarray, color: np.ndarray, alpha: float = 0.5, mask: np.ndarray | None = None
) -> np.ndarray:
    """Blend ``(1 - alpha)·img + alpha·color`` (both ``H×W×3`` uint8); where ``mask`` is False
    (e.g. ignored pixels) the image is kept as it is."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img, color = checked_rgb(img), checked_rgb(color)
    if img.shape != color.shape:
        raise ValueError(f"image {img.shape} and colour map {color.shape} differ in size")
    out = np.empty_like(img)
    rows = max(1, (1 << 22) // max(img.shape[1], 1))  # float temporaries of ~4 Mpx at a time
    for r0 in range(0, img.shape[0], rows):
        part = slice(r0, r0 + rows)
        blend = img[part].astype(np.float32) * (1.0 - alpha) + color[part].astype(np.float32) * alpha
        out[part] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    if mask is not None:
        out = np.where(np.asarray(mask, dtype=bool)[:, :, None], out, img)
    return out
