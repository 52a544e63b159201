"""Loading a network for inference, whatever holds it, and writing the deploy folder.

Sources: a deploy folder (``model.json`` + ``model.safetensors``, written by
:func:`save_deploy_model` at the end of training and by ``duda export``), a duda training
checkpoint or run folder (any of its networks, rebuilt from the method's declared
:meth:`~duda.methods.Method.network_specs`), a published DAFormer / MIC mmseg checkpoint, an ONNX
file, or a Hugging Face SegFormer folder or hub id. This module sits between the training engine
and the methods: both use it, and it imports neither at module level.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from duda.engine.checkpoint import latest_checkpoint, load_checkpoint
from duda.errors import CheckpointError
from duda.files import atomic_path, ensure_dir, write_text


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

    from duda.models import build_from_spec

    info_path = path / "model.json"
    weights = path / "model.safetensors"
    for p in (info_path, weights):
        if not p.is_file():
            raise CheckpointError(f"{path}: expected a deploy folder with model.json and model.safetensors")
    info = json.loads(info_path.read_text())
    model = build_from_spec(info)
    _load_state_strict(model, load_file(str(weights)), str(weights))
    return _ready(model, info["name"], info)


def _from_training_checkpoint(path: Path, which: str) -> InferenceModel:
    from duda.config import config_from_dict
    from duda.methods import network_specs
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
    model = specs[which].build(meta["num_classes"], pretrained=False)
    _load_state_strict(model, ckpt["state"][which], f"{path} [{which}]")
    return _ready(model, specs[which].config.name, meta)


def _ready(model: nn.Module, name: str, meta: dict) -> InferenceModel:
    """``model`` in eval mode with the classes, palette, normalisation and test scale of ``meta``."""
    model.eval()
    return InferenceModel(
        model=model,
        model_name=name,
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
