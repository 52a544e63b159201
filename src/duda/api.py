"""The Python API: load a trained model and segment images in three lines.

    >>> import duda
    >>> seg = duda.load_model("runs/synth/duda/model")      # deploy folder, run folder, .pt or .onnx
    >>> labels = seg.predict("street.png")                   # H×W uint8 trainIds, the image's size
    >>> duda.save_png("street_color.png", seg.colorize(labels))

Like mmseg's ``init_model`` / ``inference_model`` and detectron2's ``DefaultPredictor``: the
model's own preprocessing (keep-ratio resize to its test scale, mean/std) is applied for you, and
labels come back at the input's size. ``duda predict``, ``duda eval`` and ``duda export`` load
their models through :func:`load_model` too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from duda.errors import DudaError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from duda.config import ExperimentConfig
    from duda.engine.trainer import TrainResult
    from duda.loading import InferenceModel

#: One image: a file path, a PIL image, or an ``H×W×3`` uint8 RGB array.
Image = Union[str, os.PathLike, "PILImage", np.ndarray]
#: ``predict`` also takes a batch: a list/tuple of images, or a ``B×H×W×3`` uint8 array.
Images = Image | Sequence[Image]


class Segmenter:
    """A loaded segmentation model with its preprocessing, classes and palette.

    ``mode`` is ``"whole"`` (the image at the test scale in one pass, the default) or ``"slide"``
    (sliding windows of ``crop`` with ``stride``); ``flip`` averages with the mirrored image."""

    def __init__(
        self,
        loaded: InferenceModel,
        device: str | torch.device = "cpu",
        *,
        mode: str = "whole",
        crop: tuple[int, int] = (512, 512),
        stride: tuple[int, int] = (341, 341),
        flip: bool = False,
    ) -> None:
        if mode not in ("whole", "slide"):
            raise DudaError(f"mode={mode!r}: expected 'whole' or 'slide'")
        self.loaded = loaded
        self.mode, self.crop, self.stride, self.flip = mode, tuple(crop), tuple(stride), flip
        self.device = torch.device("cpu")
        self.to(device)

    # ------------------------------------------------------------------ what the model is
    @property
    def classes(self) -> list[str]:
        """Class names, index = trainId."""
        return list(self.loaded.classes)

    @property
    def palette(self) -> np.ndarray:
        """``K×3`` uint8 colours, index = trainId."""
        return self.loaded.palette

    @property
    def num_classes(self) -> int:
        return self.loaded.num_classes

    @property
    def model(self) -> Any:
        """The network: an ``nn.Module`` in eval mode, or an ONNX session wrapper."""
        return self.loaded.model

    @property
    def model_name(self) -> str:
        return self.loaded.model_name

    @property
    def resize(self) -> tuple[int, int] | None:
        """Keep-ratio test scale (W, H) the image is resized to before the network, or None."""
        return self.loaded.resize

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.model_name}, {self.num_classes} classes, test scale {self.resize}, "
            f"{self.mode}, device {self.device})"
        )

    def to(self, device: str | torch.device) -> Segmenter:
        """Move the network to ``device`` (an ONNX model stays on the CPU). Returns ``self``."""
        from duda.engine.distributed import resolve_device

        device = resolve_device(str(device), what="device")
        if isinstance(self.loaded.model, torch.nn.Module):
            self.loaded.model = self.loaded.model.to(device).eval()
            self.device = device
        elif device.type != "cpu":
            raise DudaError(f"{self.model_name}: an ONNX model runs on the CPU here, not on {device}")
        return self

    # ------------------------------------------------------------------ prediction
    def predict(self, image: Images) -> np.ndarray | list[np.ndarray]:
        """trainId map(s), uint8, at each input's own size.

        One image (path, PIL image, ``H×W×3`` uint8 array) gives an ``H×W`` array; a list gives a
        list; a ``B×H×W×3`` array gives a ``B×H×W`` array."""
        from duda.evaluation.predict import predict_label

        def one(rgb: np.ndarray) -> np.ndarray:
            return predict_label(
                self.loaded.model, rgb, self.loaded.mean, self.loaded.std, self.resize, self.mode,
                self.crop, self.stride, flip=self.flip, device=self.device,
            )  # fmt: skip

        return self._map(image, one)

    def predict_proba(self, image: Images) -> np.ndarray | list[np.ndarray]:
        """Class probabilities ``K×H×W`` float32 (softmax) at each input's size; batches as
        :meth:`predict` (a ``B×H×W×3`` array gives ``B×K×H×W``)."""
        import torch.nn.functional as F

        from duda.evaluation.inference import infer
        from duda.evaluation.predict import image_to_tensor

        def one(rgb: np.ndarray) -> np.ndarray:
            x = image_to_tensor(rgb, self.loaded.mean, self.loaded.std, self.resize).to(self.device)
            with torch.inference_mode():
                logits = infer(
                    self.loaded.model, x, tuple(rgb.shape[:2]), mode=self.mode, crop=self.crop,
                    stride=self.stride, num_classes=self.num_classes, flip=self.flip,
                )  # fmt: skip
                return F.softmax(logits.float(), dim=1)[0].cpu().numpy()

        return self._map(image, one)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """``H×W×3`` uint8 colours of a trainId map (255 / unknown ids black)."""
        from duda.evaluation.visualize import colorize

        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise DudaError(f"colorize: expected an H×W label map, got shape {labels.shape}")
        return colorize(labels, self.palette)

    def overlay(self, image: Image, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The image blended with the colours of ``labels`` (``H×W×3`` uint8)."""
        from duda.evaluation.visualize import overlay

        return overlay(as_rgb(image), self.colorize(labels), alpha)

    def _map(self, image: Images, fn) -> np.ndarray | list[np.ndarray]:
        if isinstance(image, np.ndarray) and image.ndim == 4:
            return np.stack([fn(as_rgb(im)) for im in image])
        if isinstance(image, (list, tuple)):
            return [fn(as_rgb(im)) for im in image]
        return fn(as_rgb(image))


def as_rgb(image: Image) -> np.ndarray:
    """An ``H×W×3`` uint8 RGB array from a path, a PIL image or an array (grey and RGBA are
    converted); anything else is refused with what was expected."""
    from duda.evaluation.predict import load_rgb

    if isinstance(image, (str, os.PathLike)):
        return load_rgb(Path(image))
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image.Image
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise DudaError(f"image array of shape {image.shape}: expected H×W×3 (RGB) or H×W")
        if image.dtype != np.uint8:
            raise DudaError(
                f"image array of dtype {image.dtype}: expected uint8 RGB 0-255 (convert floats in 0-1 "
                "with (x * 255).round().astype(np.uint8))"
            )
        return image[..., :3]
    raise DudaError(
        f"cannot read an image from {type(image).__name__}: expected a file path, a PIL image or an "
        "H×W×3 uint8 numpy array"
    )


def load_model(
    path: str | os.PathLike,
    which: str = "student",
    device: str | torch.device = "cpu",
    **options: Any,
) -> Segmenter:
    """A :class:`Segmenter` from a deploy folder (``model.json`` + ``model.safetensors``), a
    training run folder (its latest checkpoint), a ``.pt`` checkpoint (``which`` network:
    student, teacher, large, ...), a published DAFormer/MIC checkpoint, or an ``.onnx`` file.
    ``options``: ``mode``, ``crop``, ``stride``, ``flip`` of :class:`Segmenter`."""
    from duda.loading import load_inference_model

    return Segmenter(load_inference_model(path, which=which), device, **options)


def train(config: str | os.PathLike | ExperimentConfig, *overrides: str, **keys: Any) -> TrainResult:
    """Train from a YAML file (or a loaded config) as ``duda train`` does, resuming a run that
    its ``work_dir`` holds. Overrides as ``"key.sub=value"`` strings or keywords with ``__`` for
    dots: ``duda.train("cfg.yaml", train__iters=100, work_dir="runs/try")``."""
    from duda.config import ExperimentConfig, config_from_dict, load_config
    from duda.config_base import apply_overrides, to_dict
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
    import json

    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)  # numbers, booleans, lists and dicts are YAML in JSON form
