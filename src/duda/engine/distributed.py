"""PyTorch distributed (torchrun / DDP) helpers. A plain single process is world size 1.

``torchrun --nproc_per_node N -m duda train CONFIG`` sets RANK/WORLD_SIZE/LOCAL_RANK; we pick
NCCL on CUDA and gloo on CPU. Only rank 0 logs and saves; every rank computes the same EMA
teacher update from identical (all-reduced) student weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from duda.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


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


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the process group when launched by torchrun; no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
