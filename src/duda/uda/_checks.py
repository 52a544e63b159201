"""Small shape/argument checks shared by the UDA pieces; they raise ``UdaInputError``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from duda.errors import DudaError


class UdaInputError(DudaError, ValueError):
    """A tensor or argument given to a UDA building block has the wrong shape, type or value."""


def check_dim(name: str, tensor: torch.Tensor, dims: int, layout: str) -> None:
    """Raise unless ``tensor`` is a tensor with ``dims`` dimensions (``layout`` names them)."""
    if not isinstance(tensor, torch.Tensor):
        raise UdaInputError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != dims:
        raise UdaInputError(f"{name}: expected shape {layout}, got {tuple(tensor.shape)}")


def check_probability(name: str, value: float) -> None:
    """Raise unless ``0 <= value <= 1``."""
    if not 0.0 <= float(value) <= 1.0:
        raise UdaInputError(f"{name}: expected a probability in [0, 1], got {value!r}")


def channel_stats(values: Sequence[float] | torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """Per-channel mean/std as a ``1×3×1×1`` tensor on ``like``'s device (float32 or wider)."""
    stats = torch.as_tensor(values, dtype=torch.float32).flatten()
    if stats.numel() != like.shape[1]:
        raise UdaInputError(
            f"{name}: expected {like.shape[1]} values (one per image channel), got {stats.numel()}"
        )
    dtype = like.dtype if like.dtype == torch.float64 else torch.float32
    # non-blocking: a blocking host-to-GPU copy waits for all the work queued on the device
    return stats.to(device=like.device, dtype=dtype, non_blocking=True).view(1, -1, 1, 1)


def uniform(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """U[0, 1) draws from ``generator`` (on its own device), moved to ``device``.

    Drawing on the generator's device keeps the stream identical whatever device the data is on,
    so a CPU generator gives the same augmentation on CPU and GPU. The copy to a GPU does not
    wait for the work queued there (a blocking host-to-GPU copy would).
    """
    draws = torch.rand(tuple(shape), generator=generator, device=generator.device)
    return draws.to(device, non_blocking=True)
