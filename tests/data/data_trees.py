"""Tiny dataset trees in each published layout, for the data tests (64×32 images)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

W, H = 64, 32


def write_rgb(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """A random RGB PNG; returns the RGB array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    cv2.imwrite(str(path), img[:, :, ::-1])
    return img


def id_columns(ids: list[int], size: tuple[int, int] = (W, H), dtype: type = np.uint8) -> np.ndarray:
    """A label map whose column x holds ids[x % len(ids)]."""
    cols = np.array([ids[x % len(ids)] for x in range(size[0])], dtype=dtype)
    return np.tile(cols, (size[1], 1))


def write_gray(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), label)


def write_palette(path: Path, label: np.ndarray) -> None:
    """A palette PNG (as GTA5 ships) whose indices are the ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


GTA_IDS = [0, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 9, 34, 200]
SYNTHIA_IDS = [0, 3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11, 13, 16, 18, 20, 25, 300]
CITYSCAPES_IDS = list(range(34)) + [250]


def make_gta(root: Path, n: int = 3, ids: list[int] = GTA_IDS) -> Path:
    for i in range(1, n + 1):
        write_rgb(root / "images" / f"{i:05d}.png", i)
        write_palette(root / "labels" / f"{i:05d}.png", id_columns(ids))
    return root


def make_synthia(root: Path, n: int = 2, ids: list[int] = SYNTHIA_IDS) -> Path:
    for i in range(1, n + 1):
        write_rgb(root / "RGB" / f"{i:07d}.png", i)
        label = np.zeros((H, W, 3), dtype=np.uint16)
        label[:, :, 2] = id_columns(ids, dtype=np.uint16)  # channel -1 in BGR order: the class
        label[:, :, 1] = 1000 + i  # instance ids: must be ignored
        label[:, :, 0] = 7
        write_gray(root / "GT" / "LABELS" / f"{i:07d}.png", label)
    return root


def make_cityscapes(root: Path, n: int = 2, splits: tuple[str, ...] = ("train", "val")) -> Path:
    for split in splits:
        for i in range(n):
            city = "aachen" if split == "train" else "frankfurt"
            stem = f"{city}_000000_{i:06d}"
            write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", i)
            write_gray(
                root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", id_columns(CITYSCAPES_IDS)
            )
    return root


def make_acdc(root: Path, conditions: tuple[str, ...] = ("fog", "night"), n: int = 2) -> Path:
    for cond in conditions:
        for split in ("train", "val", "test"):
            for i in range(n):
                stem = f"GP010475_frame_{i:06d}"
                write_rgb(root / "rgb_anon" / cond / split / "GP010475" / f"{stem}_rgb_anon.png", i)
                if split != "test":
                    label = id_columns(CITYSCAPES_IDS)
                    write_gray(root / "gt" / cond / split / "GP010475" / f"{stem}_gt_labelIds.png", label)
    return root


def make_darkzurich(root: Path, n: int = 2) -> Path:
    for i in range(n):
        write_rgb(
            root / "rgb_anon" / "train" / "night" / "GOPR0351" / f"GOPR0351_frame_{i:06d}_rgb_anon.png", i
        )
        write_rgb(
            root / "rgb_anon" / "train" / "day" / "GOPR0348" / f"GOPR0348_frame_{i:06d}_rgb_anon.png", i
        )
        stem = f"GOPR0356_frame_{i:06d}"
        write_rgb(root / "rgb_anon" / "val" / "night" / "GOPR0356" / f"{stem}_rgb_anon.png", i)
        write_gray(
            root / "gt" / "val" / "night" / "GOPR0356" / f"{stem}_gt_labelIds.png", id_columns(CITYSCAPES_IDS)
        )
    return root
