"""What a loaded network is (:class:`InferenceModel`) and the deploy folder that ships one.

A deploy folder is ``model.json`` (architecture spec, classes, palette, normalisation, test scale)
+ ``model.safetensors``; :func:`save_deploy_model` writes it at the end of training and for
``duda export`` / ``duda convert``, :func:`load_deploy_folder` reads it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file
from torch import nn

from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from duda.errors import CheckpointError
from duda.files import atomic_path, ensure_dir, write_text
from duda.models import build_from_spec


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


def load_state_strict(model: nn.Module, state: dict, source: str) -> None:
    """Load ``state`` into ``model``; a CheckpointError naming the keys when they do not fit."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit the architecture; missing keys {list(missing)[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected keys {list(unexpected)[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )


def load_deploy_folder(path: str | os.PathLike) -> InferenceModel:
    """The model of a deploy folder (``model.json`` + ``model.safetensors``)."""
    path = Path(path)
    info_path = path / "model.json"
    weights = path / "model.safetensors"
    for p in (info_path, weights):
        if not p.is_file():
            raise CheckpointError(f"{path}: expected a deploy folder with model.json and model.safetensors")
    info = json.loads(info_path.read_text())
    model = build_from_spec(info)
    load_state_strict(model, load_file(str(weights)), str(weights))
    return ready(model, info["name"], info)


def ready(model: nn.Module, name: str, meta: dict) -> InferenceModel:
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
    resize = getattr(dataset, "default_resize", None)
    return {
        "num_classes": dataset.labels.num_classes,
        "classes": list(dataset.labels.names),
        "palette": np.asarray(dataset.labels.palette).astype(int).tolist(),
        "mean": [float(v) for v in IMAGENET_MEAN],
        "std": [float(v) for v in IMAGENET_STD],
        "resize": list(resize) if resize else None,
    }
