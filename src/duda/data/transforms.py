"""Small pure transforms of (image, label) arrays, as DAFormer's mmseg training pipeline does.

Images are uint8 H×W×3 RGB, labels uint8 H×W trainIds (255 = ignore). Randomness comes from an
explicit ``numpy.random.Generator`` so that a sample is a pure function of its seed.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from duda.data.labels import IGNORE_INDEX

IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

Box = tuple[int, int, int, int]  # y0, y1, x0, x1


def normalize(img: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 RGB → float32 3×H×W, (x − mean) / std with ImageNet statistics (0–255 units)."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    inv_std = 1.0 / np.asarray(IMAGENET_STD, dtype=np.float32)
    out = (img.astype(np.float32) - mean) * inv_std
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize` for 3×H×W or B×3×H×W tensors → uint8, channels last (…×H×W×3)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    img = x.float() * std + mean
    return img.round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)


def keep_ratio_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(W, H) after mmseg's keep-ratio rescale: the long side fits max(scale), the short min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(width, height), short_edge / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def resize_keep_ratio(
    img: np.ndarray, label: np.ndarray | None, scale: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize image (bilinear) and label (nearest) to :func:`keep_ratio_size`; ``None`` = no resize."""
    if scale is None:
        return img, label
    h, w = img.shape[:2]
    new_w, new_h = keep_ratio_size(w, h, scale)
    if (new_w, new_h) == (w, h):
        return img, label
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return img, label


def random_crop_box(height: int, width: int, crop: tuple[int, int], rng: np.random.Generator) -> Box:
    """A uniformly placed crop box (y0, y1, x0, x1), clipped to the image if it is smaller."""
    ch, cw = crop
    y0 = int(rng.integers(0, max(height - ch, 0) + 1))
    x0 = int(rng.integers(0, max(width - cw, 0) + 1))
    return y0, min(y0 + ch, height), x0, min(x0 + cw, width)


def crop_array(arr: np.ndarray, box: Box) -> np.ndarray:
    y0, y1, x0, x1 = box
    return arr[y0:y1, x0:x1]


def dominant_class_ratio(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> tuple[int, float]:
    """(number of classes present, share of the largest one) among non-ignored pixels."""
    counts = np.bincount(label.ravel(), minlength=256)
    counts[ignore_index] = 0
    total = counts.sum()
    present = int((counts > 0).sum())
    return present, (float(counts.max() / total) if total else 1.0)


def choose_crop_box(
    label: np.ndarray,
    crop: tuple[int, int],
    rng: np.random.Generator,
    cat_max_ratio: float = 0.75,
    ignore_index: int = IGNORE_INDEX,
    tries: int = 10,
) -> Box:
    """mmseg's RandomCrop rule: check up to ``tries`` boxes for at least two classes with none
    covering ``cat_max_ratio`` or more of the labelled pixels; a box that fails is replaced by a
    new draw, so when all ``tries`` fail the result is the (``tries``+1)-th box, unchecked."""
    height, width = label.shape
    box = random_crop_box(height, width, crop, rng)
    if cat_max_ratio >= 1.0:
        return box
    for _ in range(tries):
        present, ratio = dominant_class_ratio(crop_array(label, box), ignore_index)
        if present > 1 and ratio < cat_max_ratio:
            break
        box = random_crop_box(height, width, crop, rng)
    return box


def random_crop(
    img: np.ndarray,
    label: np.ndarray | None,
    crop: tuple[int, int],
    rng: np.random.Generator,
    cat_max_ratio: float = 0.75,
    ignore_index: int = IGNORE_INDEX,
    tries: int = 10,
) -> tuple[np.ndarray, np.ndarray | None, Box]:
    """Crop ``crop`` = (h, w) from image and label with :func:`choose_crop_box`; returns the box too."""
    if label is None:
        box = random_crop_box(img.shape[0], img.shape[1], crop, rng)
    else:
        box = choose_crop_box(label, crop, rng, cat_max_ratio, ignore_index, tries)
    return crop_array(img, box), (None if label is None else crop_array(label, box)), box


def hflip(*arrays: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """Mirror each H×W(×C) array left-right (None passes through)."""
    return tuple(None if a is None else np.ascontiguousarray(a[:, ::-1]) for a in arrays)


def pad_to(arr: np.ndarray, size: tuple[int, int], value: float) -> np.ndarray:
    """Pad the bottom/right of an H×W(×C) array to at least ``size`` = (h, w), as mmseg's Pad."""
    h, w = arr.shape[:2]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return arr
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, constant_values=value)


def valid_margin_mask(
    shape: tuple[int, int],
    margins: tuple[int, int, int, int] | None,
    reference_size: tuple[int, int] = (2048, 1024),
) -> np.ndarray:
    """float32 H×W: 0 in the ``margins`` (top, bottom, left, right), 1 inside.

    Margins are given in pixels of an image of ``reference_size`` (W, H) — MIC/HRDA use
    [30, 240, 30, 30] of the 2048×1024 Cityscapes frame (ego car, rectification border) — and are
    scaled to ``shape``, so the mask follows the resize; crop and flip it with the image.
    ``None`` → all ones.
    """
    h, w = shape
    mask = np.ones((h, w), dtype=np.float32)
    if margins is None:
        return mask
    top, bottom, left, right = margins
    sy, sx = h / reference_size[1], w / reference_size[0]
    t, b = round(top * sy), round(bottom * sy)
    l, r = round(left * sx), round(right * sx)
    mask[:t] = 0
    mask[h - b :] = 0
    mask[:, :l] = 0
    mask[:, w - r :] = 0
    return mask
