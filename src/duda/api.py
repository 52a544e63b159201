"""The Python API: load a trained model and segment images in three lines.

    >>> import duda
    >>> seg = duda.load_model("runs/synth/duda/model")      # deploy folder, run folder, .pt or .onnx
    >>> labels = seg.predict("street.png")                   # H×W uint8 trainIds, the image's size
    >>> duda.save_png("street_color.png", seg.colorize(labels))

Like mmseg's ``init_model`` / ``inference_model`` and detectron2's ``DefaultPredictor``: the
model's own preprocessing (keep-ratio resize to its test scale, mean/std) is applied for you, and
labels come back at the input's size. ``duda predict``, ``duda eval`` and ``duda export`` load
their models through :func:`load_model` too. :class:`Segmenter` and :func:`load_model` live in
:mod:`duda.inference.segmenter`; this module is the public face.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from duda.config import ExperimentConfig
from duda.config_base import apply_overrides, to_dict
from duda.inference.segmenter import Image, Images, Segmenter, as_rgb, load_model
from duda.methods import config_from_dict, load_config

if TYPE_CHECKING:
    from duda.engine.trainer import TrainResult

__all__ = ["Image", "Images", "Segmenter", "as_rgb", "load_model", "train"]


def train(config: str | os.PathLike | ExperimentConfig, *overrides: str, **keys: Any) -> TrainResult:
    """Train from a YAML file (or a loaded config) as ``duda train`` does, resuming a run that
    its ``work_dir`` holds. Overrides as ``"key.sub=value"`` strings or keywords with ``__`` for
    dots: ``duda.train("cfg.yaml", train__iters=100, work_dir="runs/try")``."""
    # in here: the training engine (data, tensorboard, ...) is not needed to load a model
    from duda.engine.trainer import train as run_training

    items = list(overrides) + [f"{k.replace('__', '.')}={_yaml_value(v)}" for k, v in keys.items()]
    if isinstance(config, ExperimentConfig):
        if items:
            data = to_dict(config)
            apply_overrides(data, items)
            config = config_from_dict(data)
        cfg = config
    else:
        cfg = load_config(str(config), items)
    return run_training(cfg, resume=True, progress=True)


def _yaml_value(value: Any) -> str:
    """A keyword value written as the YAML the override parser reads."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)  # numbers, booleans, lists and dicts are YAML in JSON form
