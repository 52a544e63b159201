"""The torch device a name stands for (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), checked."""

from __future__ import annotations

import torch

from duda.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0, what: str = "device") -> torch.device:
    """The torch device for ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` (this
    process's local rank) or ``cuda:N``; a :class:`ConfigError` naming ``what`` when the name is
    not a device or the device is not there (e.g. ``cuda`` on a machine without CUDA)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{what} {name!r}: not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ConfigError(
                f"{what} {name!r}: CUDA is not available on this machine ({why}); use cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what} {name!r}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{what} {name!r}: Apple MPS is not available on this machine; use cpu or auto")
    return device
