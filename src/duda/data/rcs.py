"""Rare-class sampling (DAFormer): draw a class by rarity, then a source image that shows it.

``f_c`` is class ``c``'s share of all labelled source pixels at original resolution (from
``sample_class_stats.json``); ``P(c) = softmax((1 − f_c) / T)``. An image is a candidate for
``c`` when it holds more than ``min_pixels`` pixels of ``c``. Classes absent from the set, or with
no candidate image, get probability 0 (the softmax is taken over the others), because drawing
them could never be honoured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from duda.errors import DatasetError


@dataclass
class RCSConfig:
    """Rare-class sampling settings (DAFormer defaults)."""

    temperature: float = 0.01  # T in softmax((1 - f_c) / T); smaller → rarer classes favoured more
    min_pixels: int = 3000  # an image is a candidate for c if it has more pixels of c than this
    min_crop_ratio: float = 0.5  # re-crop until the crop has > min_pixels·ratio pixels of c (2.0 MIC/HRDA)
    crop_tries: int = 10  # re-crops before accepting a crop with fewer pixels of c


def stats_matrix(class_stats: np.ndarray | Sequence[Mapping[int, int]], num_classes: int) -> np.ndarray:
    """Per-image class pixel counts as int64 (N, K), from an array or a list of {class: count}."""
    if isinstance(class_stats, np.ndarray):
        stats = class_stats.astype(np.int64, copy=False)
    else:
        stats = np.zeros((len(class_stats), num_classes), dtype=np.int64)
        for i, entry in enumerate(class_stats):
            for c, n in entry.items():
                stats[i, int(c)] = n
    if stats.ndim != 2 or stats.shape[1] != num_classes:
        raise DatasetError(
            f"rare-class sampling: class statistics of shape {stats.shape}, expected (N, {num_classes})"
        )
    return stats


def rcs_class_probs(
    class_totals: np.ndarray, temperature: float, eligible: np.ndarray | None = None
) -> np.ndarray:
    """softmax((1 − f_c) / T) over eligible classes (present ones by default), 0 elsewhere."""
    totals = np.asarray(class_totals, dtype=np.float64)
    if totals.sum() <= 0:
        raise DatasetError("rare-class sampling: the class statistics hold no labelled pixels")
    if temperature <= 0:
        raise DatasetError(f"rare-class sampling: temperature must be > 0, got {temperature}")
    freq = totals / totals.sum()
    mask = totals > 0 if eligible is None else (totals > 0) & eligible
    if not mask.any():
        raise DatasetError("rare-class sampling: no class has an image above the pixel threshold")
    logits = (1.0 - freq[mask]) / temperature
    probs = np.exp(logits - logits.max())  # shift for numerical safety; softmax is unchanged
    out = np.zeros_like(totals)
    out[mask] = probs / probs.sum()
    return out


class RareClassSampler:
    """Draws ``(image_index, class_id)`` pairs: class by rarity, then a uniform candidate image."""

    def __init__(
        self,
        class_stats: np.ndarray | Sequence[Mapping[int, int]],
        num_classes: int,
        temperature: float = 0.01,
        min_pixels: int = 3000,
    ) -> None:
        stats = stats_matrix(class_stats, num_classes)
        self.num_classes = num_classes
        self.temperature = temperature
        self.min_pixels = min_pixels
        self.candidates: list[np.ndarray] = [
            np.flatnonzero(stats[:, c] > min_pixels) for c in range(num_classes)
        ]
        eligible = np.array([len(c) > 0 for c in self.candidates])
        self.class_probs: np.ndarray = rcs_class_probs(stats.sum(axis=0), temperature, eligible)

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        """A class drawn from ``class_probs`` and a source image with > ``min_pixels`` of it."""
        c = int(rng.choice(self.num_classes, p=self.class_probs))
        pool = self.candidates[c]
        return int(pool[rng.integers(len(pool))]), c
