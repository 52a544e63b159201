"""Checkpoint files: atomic save, list, latest, load (a leaf module: it knows no method).

A training checkpoint ``WORK_DIR/checkpoints/iter_0001000.pt`` holds everything needed to
continue exactly: the config, every network of the method (students, teachers, frozen copies),
the optimizers and the step. Learning rates are a pure function of the step and every random
draw is seeded from ``(seed, step, rank)``, so no scheduler or RNG state is needed beyond that.
Checkpoints are loaded with ``weights_only=True``: they contain tensors and plain data only.

Whether a checkpoint fits a run (the same method, networks and architectures) is the engine's
question: :func:`duda.engine.checkpoint.incompatibilities`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from duda.errors import CheckpointError
from duda.files import write_with

_CKPT_RE = re.compile(r"^iter_(\d+)\.pt$")


def atomic_save(obj: Any, path: str | os.PathLike, what: str = "checkpoint") -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``.

    A failed write (disk full, read-only, ...) leaves no partial file and raises
    :class:`duda.files.WriteError` naming ``path`` and the reason."""
    write_with(path, lambda fh: torch.save(obj, fh), what=what)


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def save_checkpoint(ckpt_dir: str | os.PathLike, step: int, payload: dict, keep_last: int = 3) -> Path:
    """Write ``iter_{step}.pt`` atomically, then keep it and the newest ``keep_last - 1``
    checkpoints of earlier steps (``keep_last`` 0: keep all).

    The checkpoint just written is never deleted, and neither is any of a later step (it cannot
    belong to this run's past), so pruning cannot remove the newest state of the current run.
    A failed write raises :class:`duda.files.WriteError` and leaves the folder as it was."""
    path = Path(ckpt_dir) / f"iter_{step:07d}.pt"
    atomic_save(payload, path)
    if keep_last > 0:
        earlier = [p for s, p in list_checkpoints(ckpt_dir) if s < step]
        for old in earlier[: max(len(earlier) - (keep_last - 1), 0)]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, or unsafe content
        raise CheckpointError(
            f"{path}: not a readable duda checkpoint ({type(exc).__name__}: {exc})"
        ) from None


TRAINING_KEYS = ("step", "meta", "config", "state", "optimizers")


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint, verified to be complete: readable, with every key a resume needs."""
    state = load_checkpoint(path)
    missing = [k for k in TRAINING_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a duda training checkpoint (missing {', '.join(missing)})")
    return state


@dataclass
class ResumePoint:
    """The newest usable checkpoint of a run, and the newer ones that could not be read."""

    path: Path
    state: dict
    skipped: list[tuple[Path, str]]  # (path, why), newest first


def find_resume_point(ckpt_dir: str | os.PathLike) -> ResumePoint | None:
    """The newest checkpoint in ``ckpt_dir`` that loads completely, falling back past unreadable
    (e.g. truncated) ones; None when the folder holds no checkpoint. Raises
    :class:`CheckpointError` when there are checkpoints but none is readable."""
    found = list_checkpoints(ckpt_dir)
    skipped: list[tuple[Path, str]] = []
    for _, path in reversed(found):
        try:
            return ResumePoint(path, load_training_checkpoint(path), skipped)
        except CheckpointError as exc:
            skipped.append((path, str(exc)))
    if skipped:
        raise CheckpointError(
            f"{ckpt_dir}: none of the {len(skipped)} checkpoints is readable (newest: {skipped[0][1]}); "
            "start a new run in another work_dir, or --overwrite to move this one aside"
        )
    return None


def set_aside_unreadable(skipped: list[tuple[Path, str]]) -> list[Path]:
    """Rename unreadable checkpoints to ``*.pt.corrupt`` (kept for inspection, never loaded)."""
    moved = []
    for path, _ in skipped:
        target = path.with_name(path.name + ".corrupt")
        os.replace(path, target)
        moved.append(target)
    return moved
