"""Our models from a reference checkpoint: for inference, for initialising a run, as a deploy folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from duda.data.labels import CITYSCAPES, default_palette
from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from duda.errors import CheckpointError, ConfigError
from duda.inference.formats.mmseg.arch import ReferenceArch, infer_architecture
from duda.inference.formats.mmseg.keys import check_fits, convert_network, load_converted
from duda.inference.formats.mmseg.read import (
    NETWORK_ALIASES,
    is_reference_checkpoint,
    network_state,
    read_reference_file,
    reference_networks,
)
from duda.inference.model import InferenceModel, load_deploy_folder, save_deploy_model
from duda.log import logger
from duda.models import build_network
from duda.models.factory import count_parameters

# The reference's Cityscapes test scale (W, H), keep-ratio: stored in converted deploy folders.
REFERENCE_TEST_SCALE = (1024, 512)
# HRDA's (the high-resolution Cityscapes pipeline, uda_gtaHR_to_cityscapesHR_1024x1024.py).
HRDA_TEST_SCALE = (2048, 1024)


def build_reference_model(
    net: dict[str, torch.Tensor], source: str, model_name: str | None = None, meta: Any = None
) -> tuple[nn.Module, ReferenceArch]:
    """Our model with the weights of one reference network, and what it was recognised as
    (an :class:`~duda.models.hrda.HRDAModel` for an HRDA network)."""
    arch = infer_architecture(net, source, model_name, meta)
    try:
        model = build_network(arch.name, arch.num_classes, None, arch.overrides, multires=arch.hrda)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: holds {arch.describe()}, which does not build: {exc}") from None
    load_converted(model, convert_network(net, arch, model, source), f"{source} as {arch.describe()}")
    return model.eval(), arch


# ----------------------------------------------------------------------------- labels and loading


def reference_labels(meta: Any, num_classes: int) -> tuple[list[str], np.ndarray, list[str]]:
    """Class names and palette from mmcv's ``meta`` (``CLASSES``, ``PALETTE``) when usable.

    Otherwise the Cityscapes 19 classes (19 outputs) or ``class_i`` names, with a note saying so.
    """
    notes: list[str] = []
    meta = meta if isinstance(meta, dict) else {}
    classes, palette = meta.get("CLASSES"), meta.get("PALETTE")
    names: list[str] | None = None
    if isinstance(classes, (list, tuple)) and len(classes) == num_classes:
        names = [str(c) for c in classes]
    colours: np.ndarray | None = None
    if palette is not None:
        try:
            arr = np.asarray(palette, dtype=np.int64)
        except (TypeError, ValueError):
            arr = None
        if arr is not None and arr.shape == (num_classes, 3) and arr.min() >= 0 and arr.max() <= 255:
            colours = arr.astype(np.uint8)
    if names is None:
        if num_classes == CITYSCAPES.num_classes:
            names = list(CITYSCAPES.names)
            notes.append("no usable meta['CLASSES'] in the checkpoint: the Cityscapes 19 classes are assumed")
        else:
            names = [f"class_{i}" for i in range(num_classes)]
            notes.append(
                f"no usable meta['CLASSES'] in the checkpoint: classes named class_0..{num_classes - 1}"
            )
    if colours is None:
        colours = (
            CITYSCAPES.palette.copy() if names == list(CITYSCAPES.names) else default_palette(num_classes)
        )
        if palette is not None:
            notes.append("meta['PALETTE'] unusable (expected one RGB triple per class): default palette")
    return names, colours, notes


def reference_inference_model(ckpt: dict, path: str | os.PathLike, which: str = "model"):
    """An :class:`~duda.inference.InferenceModel` for network ``which`` of a read checkpoint."""
    source = str(path)
    net = network_state(ckpt["state_dict"], which, source)
    where = f"{source} [{NETWORK_ALIASES[which]}]"
    model, arch = build_reference_model(net, where, meta=ckpt.get("meta"))
    _warn(arch, where)
    classes, palette, _ = reference_labels(ckpt.get("meta"), arch.num_classes)
    return InferenceModel(
        model=model,
        model_name=arch.name,
        num_classes=arch.num_classes,
        classes=classes,
        palette=palette,
        mean=tuple(float(v) for v in IMAGENET_MEAN),
        std=tuple(float(v) for v in IMAGENET_STD),
        resize=reference_test_scale(arch),
        spec=dict(model.spec),
    )


def reference_test_scale(arch: ReferenceArch) -> tuple[int, int]:
    """The reference's Cityscapes test scale (W, H) for ``arch``: 2048x1024 for HRDA, else 1024x512."""
    return HRDA_TEST_SCALE if arch.hrda is not None else REFERENCE_TEST_SCALE


def _warn(arch: ReferenceArch, where: str) -> None:
    for message in arch.warnings:
        logger.warning("%s: %s", where, message)


@dataclass
class ReferenceInit:
    """Weights for a large student and its EMA teacher from a reference checkpoint."""

    student: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor] | None  # None: the file has no ema_model
    arch: ReferenceArch


def reference_init_states(
    ckpt: dict, model: nn.Module, source: str, model_name: str | None = None, num_classes: int | None = None
) -> ReferenceInit:
    """``model.*`` (and ``ema_model.*`` when present) converted to ``model``'s keys, checked strictly.

    ``model`` is a built network of the architecture to initialise (an HRDAModel for an HRDA
    checkpoint: its multi-resolution settings are the run's, only the weights come from the file);
    it is not modified.
    """
    state = ckpt["state_dict"]
    have = reference_networks(state)
    expected = model.state_dict()
    out: dict[str, dict | None] = {"model": None, "ema_model": None}
    arch = None
    for name in ("model", "ema_model"):
        if name not in have:
            continue
        net = network_state(state, name, source)
        where = f"{source} [{name}]"
        arch = infer_architecture(net, where, model_name, ckpt.get("meta"))
        if name == "model":
            _warn(arch, where)
        if num_classes is not None and arch.num_classes != num_classes:
            raise ConfigError(f"{where}: predicts {arch.num_classes} classes, this run has {num_classes}")
        converted = convert_network(net, arch, model, where)
        check_fits(expected, converted, f"{where} (holds {arch.describe()})")
        out[name] = {k: v.to(expected[k].dtype) for k, v in converted.items()}
    if out["model"] is None or arch is None:
        raise CheckpointError(f"{source}: no model.* network to initialise from; it holds {have}")
    return ReferenceInit(student=out["model"], teacher=out["ema_model"], arch=arch)


# ----------------------------------------------------------------------------- conversion


@dataclass
class ConversionResult:
    out_dir: Path
    arch: ReferenceArch
    network: str  # model | ema_model | imnet_model
    params: int
    notes: list[str]


def convert_reference_checkpoint(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    network: str = "model",
    model_name: str | None = None,
    resize: tuple[int, int] | None | str = "reference",
) -> ConversionResult:
    """Write network ``network`` of an mmseg checkpoint as a deploy folder (model.safetensors +
    model.json, as :func:`duda.inference.save_deploy_model`), then reload it to check it.

    ``resize``: the test scale (W, H) stored for ``duda predict``; ``"reference"``: the reference's
    for the recognised architecture (:func:`reference_test_scale`); None: none."""
    path = Path(path)
    if path.is_dir() and (path / "latest.pth").is_file():
        path = path / "latest.pth"
    ckpt = read_reference_file(path)
    if not is_reference_checkpoint(ckpt):
        raise CheckpointError(
            f"{path}: not an mmseg checkpoint (expected a 'state_dict' with model.backbone.* or "
            "backbone.* weights); duda's own checkpoints ship with `duda train` or `duda export`"
        )
    name = NETWORK_ALIASES.get(network, network)
    source = f"{path} [{name}]"
    net = network_state(ckpt["state_dict"], network, str(path))
    model, arch = build_reference_model(net, source, model_name, ckpt.get("meta"))
    if isinstance(resize, str):
        if resize != "reference":
            raise ValueError(f"resize: expected (W, H), None or 'reference', got {resize!r}")
        resize = reference_test_scale(arch)
    classes, palette, label_notes = reference_labels(ckpt.get("meta"), arch.num_classes)
    notes = [*arch.notes, *label_notes]
    meta = {
        "num_classes": arch.num_classes,
        "classes": classes,
        "palette": palette,
        "mean": [float(v) for v in IMAGENET_MEAN],
        "std": [float(v) for v in IMAGENET_STD],
        "resize": list(resize) if resize else None,
        "converted_from": {"file": str(path), "network": name, "reference": f"{arch.backbone} + {arch.head}"},
        "notes": notes,
    }
    out_dir = save_deploy_model(out_dir, model, meta)
    reloaded = load_deploy_folder(out_dir)
    mine, theirs = model.state_dict(), reloaded.model.state_dict()
    if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k]) for k in mine):
        raise CheckpointError(f"{out_dir}: the written deploy folder does not reload to the same weights")
    return ConversionResult(out_dir, arch, name, count_parameters(model), notes)
