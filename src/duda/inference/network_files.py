"""Networks from files for the methods (DUDA's extra frozen teachers, ``method.duda.large_init``).

The methods do not import this package (it sits above them); :mod:`duda.inference` installs
:data:`NETWORK_FILES` with :func:`duda.methods.base.set_network_files` when it is imported, and
the training engine imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from duda.errors import ConfigError
from duda.inference.formats import mmseg
from duda.inference.loaders import load_inference_model
from duda.inference.model import InferenceModel


class InferenceNetworkFiles:
    """:class:`duda.methods.base.NetworkFiles` over :func:`load_inference_model`."""

    def load(self, path: str | os.PathLike, which: str) -> InferenceModel:
        return load_inference_model(path, which=which)

    def init_states(
        self,
        path: str | os.PathLike,
        model: nn.Module,
        where: str,
        model_name: str | None = None,
        num_classes: int | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Weights for ``model`` (not modified) from ``path``, and its EMA teacher's when the file
        has its own (a published mmseg checkpoint with ``ema_model.*``), checked strictly.

        An mmseg checkpoint (or a folder holding ``latest.pth``) is converted to ``model``'s keys;
        anything else is loaded as ``load_inference_model(path, "student")``."""
        path = Path(path)
        if path.is_dir() and (path / "latest.pth").is_file():
            path = path / "latest.pth"
        ckpt = mmseg.read_reference_file(path) if path.is_file() else None
        if ckpt is not None and mmseg.is_reference_checkpoint(ckpt):
            init = mmseg.reference_init_states(
                ckpt, model, where, model_name=model_name, num_classes=num_classes
            )
            return init.student, init.teacher
        loaded = load_inference_model(path, which="student")
        if not isinstance(loaded.model, nn.Module):
            raise ConfigError(f"{where}: not a PyTorch model (ONNX?)")
        state = loaded.model.state_dict()
        mmseg.check_fits(model.state_dict(), state, f"{where} (holds {loaded.model_name} {loaded.spec})")
        return state, None


NETWORK_FILES = InferenceNetworkFiles()
