"""Loading a network for inference, whatever holds it: one loader per source, in a registry.

Sources, tried in this order: a Hugging Face hub id, an ONNX file, a deploy folder
(``model.json`` + ``model.safetensors``), a Hugging Face SegFormer folder, a published mmseg
(DAFormer / MIC / HRDA) checkpoint, and a duda training checkpoint or run folder (any of its
networks, rebuilt from the method's declared :meth:`~duda.methods.Method.network_specs`).
:func:`register_loader` adds a source.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duda.checkpoints import latest_checkpoint, load_checkpoint
from duda.errors import CheckpointError
from duda.inference.formats import hf, mmseg
from duda.inference.model import InferenceModel, load_deploy_folder, load_state_strict, ready
from duda.inference.onnx import load_onnx_model
from duda.methods import config_from_dict, network_specs

_UNSET = object()


@dataclass
class Source:
    """What :func:`load_inference_model` was given: the text, the path it names (``model.json``,
    ``model.safetensors`` or ``config.json`` stand for their folder), and, read once when a
    loader asks, the checkpoint file it holds and that file's contents."""

    text: str
    path: Path
    _file: Path | None = None
    _content: Any = field(default=_UNSET, repr=False)

    @classmethod
    def of(cls, given: str | os.PathLike) -> Source:
        path = Path(given)
        if path.suffix != ".onnx" and path.name in ("model.json", "model.safetensors", hf.HF_CONFIG):
            path = path.parent
        return cls(str(given), path)

    def has(self, name: str) -> bool:
        """True for a folder holding ``name``."""
        return self.path.is_dir() and (self.path / name).is_file()

    @property
    def file(self) -> Path:
        """The checkpoint file: the path itself, or a run folder's latest checkpoint."""
        if self._file is None:
            self._file = _checkpoint_file(self.path) if self.path.is_dir() else self.path
        return self._file

    def content(self) -> Any:
        """The checkpoint's contents, read once."""
        if self._content is _UNSET:
            try:
                self._content = load_checkpoint(self.file)
            except CheckpointError:
                # mmcv checkpoints may pickle numpy values or classes in their meta: read numpy
                # safely, refuse the rest with the command that strips it
                self._content = mmseg.read_reference_file(self.file)
        return self._content


def _checkpoint_file(folder: Path) -> Path:
    latest = latest_checkpoint(folder / "checkpoints") or latest_checkpoint(folder)
    if latest is None and (folder / "latest.pth").is_file():  # a published mmseg run folder
        latest = folder / "latest.pth"
    if latest is None:
        raise CheckpointError(
            f"{folder}: no model found; expected a deploy folder (model.json + model.safetensors), "
            "a run folder with checkpoints/iter_*.pt, a .pt checkpoint, an .onnx file or a "
            "Hugging Face SegFormer folder (config.json + model.safetensors)"
        )
    return latest


@dataclass(frozen=True)
class Loader:
    """One source of networks: ``claims(source)`` says whether it is one, ``load(source, which)``
    loads network ``which`` from it."""

    name: str
    claims: Callable[[Source], bool]
    load: Callable[[Source, str], InferenceModel]


_LOADERS: list[Loader] = []


def register_loader(
    name: str,
    claims: Callable[[Source], bool],
    load: Callable[[Source, str], InferenceModel],
    *,
    before: str | None = None,
) -> Loader:
    """Add a source of networks, tried after those registered so far (or just ``before`` the one
    of that name); registering a name again replaces that loader in place."""
    loader = Loader(name, claims, load)
    names = [entry.name for entry in _LOADERS]
    if name in names:
        _LOADERS[names.index(name)] = loader
    elif before is not None:
        _LOADERS.insert(names.index(before), loader)
    else:
        _LOADERS.append(loader)
    return loader


def registered_loaders() -> list[str]:
    """Names of the registered sources, in the order they are tried."""
    return [entry.name for entry in _LOADERS]


def load_inference_model(path: str | os.PathLike, which: str = "student") -> InferenceModel:
    """Load a model for prediction from a deploy folder, its model.json, a training checkpoint
    (``which`` network), a run's work dir (its latest checkpoint) or an ONNX file.

    Published DAFormer / MIC checkpoints (mmseg ``latest.pth``, or a folder holding one) are
    recognised too: ``which`` "student"/"model" is their ``model.*`` network (the one the reference
    evaluates), "teacher"/"ema_model" the EMA teacher (see ``duda.inference.formats.mmseg``).
    So are Hugging Face ``SegformerForSemanticSegmentation`` folders (config.json with model_type
    "segformer") and hub ids of such repositories (``duda.inference.formats.hf``)."""
    source = Source.of(path)
    for loader in _LOADERS:
        if loader.claims(source):
            return loader.load(source, which)
    raise CheckpointError(f"{path}: no loader takes it (registered: {', '.join(registered_loaders())})")


# --------------------------------------------------------------------------- the built-in sources


def _load_training_checkpoint(source: Source, which: str) -> InferenceModel:
    path, ckpt = source.file, source.content()
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
    load_state_strict(model, ckpt["state"][which], f"{path} [{which}]")
    return ready(model, specs[which].config.name, meta)


register_loader(
    "huggingface-hub",
    lambda s: hf.is_hub_id(s.text),
    lambda s, which: hf.load_hf_folder(hf.download_hf_model(s.text)),
)
register_loader("onnx", lambda s: s.path.suffix == ".onnx", lambda s, which: load_onnx_model(s.path))
register_loader("deploy-folder", lambda s: s.has("model.json"), lambda s, which: load_deploy_folder(s.path))
register_loader(
    "huggingface-folder", lambda s: s.has(hf.HF_CONFIG), lambda s, which: hf.load_hf_folder(s.path)
)
register_loader(
    "mmseg-checkpoint",
    lambda s: mmseg.is_reference_checkpoint(s.content()),
    lambda s, which: mmseg.reference_inference_model(s.content(), s.file, which),
)
register_loader("duda-checkpoint", lambda s: True, _load_training_checkpoint)
