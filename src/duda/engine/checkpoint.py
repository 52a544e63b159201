"""Training checkpoints (atomic, last K kept) and the deployable model folder.

A training checkpoint ``WORK_DIR/checkpoints/iter_0001000.pt`` holds everything needed to
continue exactly: the config, every network of the method (students, teachers, frozen copies),
the optimizers and the step. Learning rates are a pure function of the step and every random
draw is seeded from ``(seed, step, rank)``, so no scheduler or RNG state is needed beyond that.
Checkpoints are loaded with ``weights_only=True``: they contain tensors and plain data only.

The deployable model folder holds ``model.safetensors`` and ``model.json`` (architecture,
classes, palette, normalisation, test scale): all a user needs to rebuild and run the network.
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


def incompatibilities(old_cfg: dict, new_cfg: dict, old_classes: int | None, new_classes: int) -> list[str]:
    """What makes a checkpoint written under ``old_cfg`` unusable for a run of ``new_cfg``, as
    ``key: checkpoint value -> config value`` lines (empty when they fit): the method, the number
    of classes, and each network the method declares (:meth:`duda.methods.Method.network_specs`):
    its model name and architecture, multi-resolution settings and input scale."""
    from duda.config import config_from_dict
    from duda.errors import DudaError
    from duda.methods import network_specs

    out: list[str] = []

    def differ(key: str, a: Any, b: Any) -> None:
        line = f"{key}: {a!r} in the checkpoint, {b!r} now"
        if a != b and line not in out:
            out.append(line)

    from duda.config import MethodConfig

    default = MethodConfig().name
    old_method = (old_cfg.get("method") or {}).get("name", default)
    new_method = (new_cfg.get("method") or {}).get("name", default)
    differ("method.name", old_method, new_method)
    differ("number of classes", old_classes, new_classes)
    if old_method != new_method:
        return out
    try:
        old_specs = network_specs(config_from_dict(old_cfg))
    except DudaError as exc:
        return [*out, f"config: the checkpoint's config does not load in this version ({exc})"]
    new_specs = network_specs(config_from_dict(new_cfg))
    for name in [*new_specs, *(n for n in old_specs if n not in new_specs)]:
        if name not in old_specs or name not in new_specs:
            differ(f"network {name!r}", name in old_specs, name in new_specs)
            continue
        old, new = old_specs[name], new_specs[name]
        differ(f"{new.key}.name", old.config.name, new.config.name)
        if old.config.name == new.config.name:
            old_arch, new_arch = _full_arch(old.config), _full_arch(new.config)
            for field in [*new_arch, *(f for f in old_arch if f not in new_arch)]:
                differ(f"{new.key}.arch.{field}", old_arch.get(field), new_arch.get(field))
        old_mr, new_mr = old.multires or {}, new.multires or {}
        if bool(old.multires) != bool(new.multires):
            differ(f"{new.key} multi-resolution (method.hrda)", old.multires, new.multires)
        for field in [*new_mr, *(f for f in old_mr if f not in new_mr)]:
            differ(f"method.hrda.{field} (multi-resolution {new.key})", old_mr.get(field), new_mr.get(field))
        differ(f"{new.key} input scale", old.input_scale, new.input_scale)
    return out


def _full_arch(model) -> dict[str, Any]:
    """Every architecture field of a model config, defaults filled in (lists, not tuples): a
    field left out in one config and written with its default in the other is no difference."""
    from duda.errors import DudaError
    from duda.models.factory import resolve_arch

    try:
        arch = resolve_arch(model.name, dict(model.arch))
    except DudaError:  # a model this version no longer knows: compare what was written
        arch = dict(model.arch)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}
