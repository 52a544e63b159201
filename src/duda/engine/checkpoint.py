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

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from duda.errors import CheckpointError
from duda.files import atomic_path, ensure_dir, write_text, write_with

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


def _arch_key(model_cfg: dict | None) -> tuple[str | None, dict]:
    model_cfg = model_cfg or {}
    return model_cfg.get("name"), dict(model_cfg.get("arch") or {})


def incompatibilities(old_cfg: dict, new_cfg: dict, old_classes: int | None, new_classes: int) -> list[str]:
    """What makes a checkpoint written under ``old_cfg`` unusable for a run of ``new_cfg``: the
    model name and architecture (and DUDA's large model), the method, DUDA's base method and the
    number of classes, as ``key: checkpoint value -> config value`` lines (empty when they fit)."""
    out = []

    def differ(key: str, a: Any, b: Any) -> None:
        if a != b:
            out.append(f"{key}: {a!r} in the checkpoint, {b!r} now")

    old_m, new_m = old_cfg.get("method") or {}, new_cfg.get("method") or {}
    old_name, old_arch = _arch_key(old_cfg.get("model"))
    new_name, new_arch = _arch_key(new_cfg.get("model"))
    differ("model.name", old_name, new_name)
    differ("model.arch", old_arch, new_arch)
    differ("method.name", old_m.get("name"), new_m.get("name"))
    if new_m.get("name") == "duda" and old_m.get("name") == "duda":
        differ("method.base", old_m.get("base"), new_m.get("base"))
        old_l = _arch_key((old_m.get("duda") or {}).get("large"))
        new_l = _arch_key((new_m.get("duda") or {}).get("large"))
        differ("method.duda.large.name", old_l[0], new_l[0])
        differ("method.duda.large.arch", old_l[1], new_l[1])
    differ("number of classes", old_classes, new_classes)
    return out


# --------------------------------------------------------------------------- deployable model


@dataclass
class InferenceModel:
    """A network ready for prediction, with what is needed to feed it and show its output."""

    model: Any  # nn.Module in eval mode, or a callable numpy -> numpy (ONNX)
    model_name: str
    num_classes: int
    classes: list[str]
    palette: np.ndarray  # (K, 3) uint8
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: tuple[int, int] | None  # (W, H) keep-ratio test scale
    spec: dict


def save_deploy_model(out_dir: str | os.PathLike, model: nn.Module, meta: dict) -> Path:
    """Write ``model.safetensors`` + ``model.json``; ``meta`` must hold classes, palette, mean, std."""
    from safetensors.torch import save_file

    out_dir = ensure_dir(out_dir, "model folder")
    model = getattr(model, "module", model)
    spec = dict(model.spec)
    info = {**spec, **meta, "format": "duda-deploy-1"}
    info["palette"] = np.asarray(info["palette"]).astype(int).tolist()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors", what="model") as tmp:
        save_file(state, str(tmp))
    write_text(out_dir / "model.json", json.dumps(info, indent=2), what="model")
    return out_dir


def _load_state_strict(model: nn.Module, state: dict, source: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit the architecture; missing keys {list(missing)[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected keys {list(unexpected)[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )


def _from_deploy_dir(path: Path) -> InferenceModel:
    from safetensors.torch import load_file

    from duda.models import build_model

    info_path = path / "model.json"
    weights = path / "model.safetensors"
    for p in (info_path, weights):
        if not p.is_file():
            raise CheckpointError(f"{path}: expected a deploy folder with model.json and model.safetensors")
    info = json.loads(info_path.read_text())
    model = build_model(info["name"], num_classes=info["num_classes"], **info.get("arch", {}))
    _load_state_strict(model, load_file(str(weights)), str(weights))
    model.eval()
    return InferenceModel(
        model=model,
        model_name=info["name"],
        num_classes=info["num_classes"],
        classes=list(info["classes"]),
        palette=np.asarray(info["palette"], dtype=np.uint8),
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
        resize=tuple(info["resize"]) if info.get("resize") else None,
        spec={k: info[k] for k in ("name", "num_classes", "arch") if k in info},
    )


def _from_training_checkpoint(path: Path, which: str) -> InferenceModel:
    from duda.config import config_from_dict
    from duda.methods import network_specs
    from duda.models import build_model
    from duda.models import reference_checkpoint as reference

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        # mmcv checkpoints may pickle numpy values or classes in their meta: read numpy safely,
        # refuse the rest with the command that strips it
        ckpt = reference.read_reference_file(path)
    if reference.is_reference_checkpoint(ckpt):  # published DAFormer / MIC (mmseg) checkpoint
        return reference.reference_inference_model(ckpt, path, which)
    if not isinstance(ckpt, dict) or not {"config", "state", "meta"} <= set(ckpt):
        raise CheckpointError(
            f"{path}: neither a duda training checkpoint (keys config, state, meta) nor an mmseg "
            "checkpoint (a state_dict with model.backbone.* / backbone.* weights)"
        )
    cfg = config_from_dict(ckpt["config"])
    specs = network_specs(cfg)
    if which not in specs or which not in ckpt["state"]:
        have = sorted(set(specs) & set(ckpt["state"]))
        raise CheckpointError(f"{path}: no network '{which}'; this {cfg.method.name} run has {have}")
    meta = ckpt["meta"]
    spec_model = specs[which]
    model = build_model(spec_model.name, num_classes=meta["num_classes"], **spec_model.arch)
    _load_state_strict(model, ckpt["state"][which], f"{path} [{which}]")
    model.eval()
    return InferenceModel(
        model=model,
        model_name=spec_model.name,
        num_classes=meta["num_classes"],
        classes=list(meta["classes"]),
        palette=np.asarray(meta["palette"], dtype=np.uint8),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        resize=tuple(meta["resize"]) if meta.get("resize") else None,
        spec=dict(model.spec),
    )


def dataset_meta(dataset) -> dict:
    """Classes, palette, normalisation and test scale of a dataset (stored with every model)."""
    from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    resize = getattr(dataset, "default_resize", None)
    return {
        "num_classes": dataset.labels.num_classes,
        "classes": list(dataset.labels.names),
        "palette": np.asarray(dataset.labels.palette).astype(int).tolist(),
        "mean": [float(v) for v in IMAGENET_MEAN],
        "std": [float(v) for v in IMAGENET_STD],
        "resize": list(resize) if resize else None,
    }


def load_inference_model(path: str | os.PathLike, which: str = "student") -> InferenceModel:
    """Load a model for prediction from a deploy folder, its model.json, a training checkpoint
    (``which`` network), a run's work dir (its latest checkpoint) or an ONNX file.

    Published DAFormer / MIC checkpoints (mmseg ``latest.pth``, or a folder holding one) are
    recognised too: ``which`` "student"/"model" is their ``model.*`` network (the one the reference
    evaluates), "teacher"/"ema_model" the EMA teacher (see ``duda.models.reference_checkpoint``).
    So are Hugging Face ``SegformerForSemanticSegmentation`` folders (config.json with model_type
    "segformer") and hub ids of such repositories (``duda.models.hf``)."""
    from duda.models import hf

    if hf.is_hub_id(str(path)):
        return hf.load_hf_folder(hf.download_hf_model(str(path)))
    path = Path(path)
    if path.suffix == ".onnx":
        from duda.deploy.onnx_export import load_onnx_model

        return load_onnx_model(path)
    if path.name in ("model.json", "model.safetensors", hf.HF_CONFIG):
        path = path.parent
    if path.is_dir():
        if (path / "model.json").is_file():
            return _from_deploy_dir(path)
        if (path / hf.HF_CONFIG).is_file():
            return hf.load_hf_folder(path)
        latest = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if latest is None and (path / "latest.pth").is_file():  # a published mmseg run folder
            latest = path / "latest.pth"
        if latest is None:
            raise CheckpointError(
                f"{path}: no model found; expected a deploy folder (model.json + model.safetensors), "
                "a run folder with checkpoints/iter_*.pt, a .pt checkpoint, an .onnx file or a "
                "Hugging Face SegFormer folder (config.json + model.safetensors)"
            )
        path = latest
    return _from_training_checkpoint(path, which)
