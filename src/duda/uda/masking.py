"""MIC masked image consistency: random block masks (method.md B.8).

The image is divided into a grid of ``round(H/block) × round(W/block)`` cells; each cell is
hidden with probability ``ratio``; the grid is resized to ``H×W`` by nearest-neighbour, as the
MIC code does, so a crop that is not a multiple of the block size gets slightly stretched blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import UdaInputError, check_dim, check_probability, uniform


def block_mask(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    block_size: int = 32,
    ratio: float = 0.7,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A ``B×1×H×W`` float mask: 1 = visible, 0 = masked; each block is masked with prob ``ratio``."""
    if block_size < 1:
        raise UdaInputError(f"mic block_size: expected a positive number of pixels, got {block_size}")
    if batch < 1 or height < 1 or width < 1:
        raise UdaInputError(f"block_mask: expected positive batch/height/width, got {(batch, height, width)}")
    check_probability("mic mask ratio", ratio)
    # Python's round (half to even) as MIC; at least one cell so tiny crops still get a mask.
    grid = (batch, 1, max(1, round(height / block_size)), max(1, round(width / block_size)))
    visible = (uniform(grid, generator, torch.device(device or "cpu")) > ratio).float()
    return F.interpolate(visible, size=(height, width), mode="nearest")


def apply_mask(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked pixels of ``img`` (``B×C×H×W``, normalised space) with a ``B×1×H×W`` mask."""
    check_dim("img", img, 4, "B×C×H×W")
    check_dim("mask", mask, 4, "B×1×H×W")
    if mask.shape[0] != img.shape[0] or mask.shape[2:] != img.shape[2:] or mask.shape[1] != 1:
        raise UdaInputError(
            f"mic mask: expected shape {(img.shape[0], 1, *img.shape[2:])}, got {tuple(mask.shape)}"
        )
    return img * mask.to(img.dtype)
