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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from duda.errors import CheckpointError

_CKPT_RE = re.compile(r"^iter_(\d+)\.pt$")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    """Write ``iter_{step}.pt`` atomically and delete all but the newest ``keep_last``."""
    path = Path(ckpt_dir) / f"iter_{step:07d}.pt"
    atomic_save(payload, path)
    if keep_last > 0:
        for _, old in list_checkpoints(ckpt_dir)[:-keep_last]:
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

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    spec = dict(model.spec)
    info = {**spec, **meta, "format": "duda-deploy-1"}
    info["palette"] = np.asarray(info["palette"]).astype(int).tolist()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out_dir / "model.safetensors")
    tmp_json = out_dir / ".model.json.tmp"
    tmp_json.write_text(json.dumps(info, indent=2))
    os.replace(tmp_json, out_dir / "model.json")
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
    evaluates), "teacher"/"ema_model" the EMA teacher (see ``duda.models.reference_checkpoint``)."""
    path = Path(path)
    if path.suffix == ".onnx":
        from duda.deploy.onnx_export import load_onnx_model

        return load_onnx_model(path)
    if path.name == "model.json" or path.name == "model.safetensors":
        path = path.parent
    if path.is_dir():
        if (path / "model.json").is_file():
            return _from_deploy_dir(path)
        latest = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if latest is None and (path / "latest.pth").is_file():  # a published mmseg run folder
            latest = path / "latest.pth"
        if latest is None:
            raise CheckpointError(
                f"{path}: no model found; expected a deploy folder (model.json + model.safetensors), "
                "a run folder with checkpoints/iter_*.pt, a .pt checkpoint or an .onnx file"
            )
        path = latest
    return _from_training_checkpoint(path, which)
