"""Window iteration of sliding-window passes: below the networks (HRDA's teacher windows) and
inference (sliding-window prediction), which both use it."""

from __future__ import annotations

from collections.abc import Iterator


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of windows of length ``crop`` every ``stride`` covering ``0..size``; the last
    window is moved back to end at the border (start 0 and one window if ``size <= crop``)."""
    if crop < 1 or stride < 1:
        raise ValueError(f"crop and stride must be >= 1, got crop {crop}, stride {stride}")
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride, size - crop), 0) for i in range(count)]


def iter_windows(
    hw: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int]
) -> Iterator[tuple[int, int, int, int]]:
    """Windows ``(y0, y1, x0, x1)`` of a sliding-window pass over an image of size ``hw``."""
    (h, w), (ch, cw), (sh, sw) = hw, crop, stride
    for y0 in window_starts(h, ch, sh):
        for x0 in window_starts(w, cw, sw):
            yield y0, min(y0 + ch, h), x0, min(x0 + cw, w)
