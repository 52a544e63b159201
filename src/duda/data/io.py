"""Reading and writing image and label files, with errors that name the file.

OpenCV decodes and resizes PNGs faster than PIL, so it is the default; PIL is used where
OpenCV would lose information (palette label PNGs, which OpenCV expands to colours).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from duda.errors import DatasetError
from duda.files import atomic_path, write_text

LabelKind = Literal["auto", "palette", "last_channel"]


def _unreadable(path: Path, what: str) -> DatasetError:
    if not path.exists():
        return DatasetError(f"{path}: file not found (expected {what})")
    if path.stat().st_size == 0:
        return DatasetError(f"{path}: file is empty (0 bytes), expected {what}")
    return DatasetError(f"{path}: not a readable image (truncated or wrong format), expected {what}")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 H×W×3 RGB."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise _unreadable(path, "an RGB image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_with_pil(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise DatasetError(
                    f"{path}: label map has PIL mode {im.mode} ({len(im.getbands())} channels), "
                    "expected a single-channel or palette PNG of class ids"
                )
            return np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError):
        raise _unreadable(path, "a single-channel label map") from None


def read_label_ids(path: str | Path, kind: LabelKind = "auto") -> np.ndarray:
    """A label map as an integer H×W array of ids.

    ``auto``: a grey PNG (8 or 16 bit); a palette PNG falls back to PIL to keep the indices.
    ``palette``: read with PIL directly (GTA5 labels are palette PNGs).
    ``last_channel``: channel -1 of OpenCV's BGR(A) decoding, unchanged depth (SYNTHIA's
    16-bit ``GT/LABELS``, as its conversion script reads them).
    """
    path = Path(path)
    if kind == "palette":
        return _read_with_pil(path)
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise _unreadable(path, "a label map")
    if kind == "last_channel":
        if arr.ndim != 3:
            raise DatasetError(f"{path}: label map has 1 channel, expected a multi-channel (16-bit) PNG")
        return np.ascontiguousarray(arr[:, :, -1])
    if arr.ndim == 2:
        return arr
    return _read_with_pil(path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header only."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, SyntaxError):
        raise _unreadable(path, "an image") from None


def write_png_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write a PNG through a temporary file in the same folder + os.replace (never half a file),
    with the umask's permissions; a failed write names the file and the reason."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), array):
            raise DatasetError(f"{path}: could not write PNG")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file through a temporary file in the same folder + os.replace."""
    write_text(path, text)
