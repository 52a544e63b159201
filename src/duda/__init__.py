"""duda: distilled unsupervised domain adaptation for lightweight semantic segmentation.

The public API (see the README's "Python API"):

- :func:`load_model` -> :class:`Segmenter` (``.predict``, ``.predict_proba``, ``.colorize``, ...)
- :func:`build_model`, :func:`list_models`: networks by name (``segformer_mitb0``, ...)
- :func:`load_config`, :func:`train`: experiments as ``duda train`` runs them
- :func:`save_png`: write a label map or a colour picture

Importing ``duda`` is cheap; torch is imported on first use of one of these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from duda._version import __version__

_EXPORTS = {
    "load_model": "duda.api",
    "Segmenter": "duda.api",
    "train": "duda.api",
    "build_model": "duda.models.factory",
    "list_models": "duda.models.factory",
    "load_config": "duda.methods.experiment",
    "save_png": "duda.evaluation.visualize",
}

__all__ = [
    "Segmenter",
    "__version__",
    "build_model",
    "list_models",
    "load_config",
    "load_model",
    "save_png",
    "train",
]

if TYPE_CHECKING:
    from duda.api import Segmenter, load_model, train
    from duda.evaluation.visualize import save_png
    from duda.methods.experiment import load_config
    from duda.models.factory import build_model, list_models


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'duda' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
