"""A loaded model with its preprocessing, classes and palette: :class:`Segmenter`.

:func:`load_model` (``duda.load_model``) loads one from any source :func:`load_inference_model`
takes; ``duda.api`` re-exports both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from duda.errors import DudaError
from duda.inference.device import resolve_device
from duda.inference.image import colorize, image_to_tensor, load_rgb, overlay, predict_label
from duda.inference.loaders import load_inference_model
from duda.inference.model import InferenceModel
from duda.inference.modes import infer_with
from duda.inference.options import DEFAULT_CROP, DEFAULT_STRIDE, MODES, InferenceOptions

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: One image: a file path, a PIL image, or an ``H×W×3`` uint8 RGB array.
Image = Union[str, os.PathLike, "PILImage", np.ndarray]
#: ``predict`` also takes a batch: a list/tuple of images, or a ``B×H×W×3`` uint8 array.
Images = Image | Sequence[Image]


class Segmenter:
    """A loaded segmentation model with its preprocessing, classes and palette.

    ``mode`` is ``"whole"`` (the image at the test scale in one pass, the default) or ``"slide"``
    (sliding windows of ``crop`` with ``stride``); ``flip`` averages with the mirrored image.
    Together they are :attr:`options` (an :class:`InferenceOptions`, with the device)."""

    def __init__(
        self,
        loaded: InferenceModel,
        device: str | torch.device = "cpu",
        *,
        mode: str = "whole",
        crop: tuple[int, int] = DEFAULT_CROP,
        stride: tuple[int, int] = DEFAULT_STRIDE,
        flip: bool = False,
    ) -> None:
        if mode not in MODES:
            raise DudaError(f"mode={mode!r}: expected 'whole' or 'slide'")
        self.loaded = loaded
        self.options = InferenceOptions(mode, crop, stride, flip, device=torch.device("cpu"))
        self.to(device)

    # ------------------------------------------------------------------ how it predicts
    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def crop(self) -> tuple[int, int]:
        return self.options.crop

    @property
    def stride(self) -> tuple[int, int]:
        return self.options.stride

    @property
    def flip(self) -> bool:
        return self.options.flip

    @property
    def device(self) -> torch.device:
        return self.options.device

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
        device = resolve_device(str(device), what="device")
        if isinstance(self.loaded.model, torch.nn.Module):
            self.loaded.model = self.loaded.model.to(device).eval()
            self.options = self.options.with_(device=device)
        elif device.type != "cpu":
            raise DudaError(f"{self.model_name}: an ONNX model runs on the CPU here, not on {device}")
        return self

    # ------------------------------------------------------------------ prediction
    def predict(self, image: Images) -> np.ndarray | list[np.ndarray]:
        """trainId map(s), uint8, at each input's own size.

        One image (path, PIL image, ``H×W×3`` uint8 array) gives an ``H×W`` array; a list gives a
        list; a ``B×H×W×3`` array gives a ``B×H×W`` array."""
        opts = self.options

        def one(rgb: np.ndarray) -> np.ndarray:
            return predict_label(
                self.loaded.model, rgb, self.loaded.mean, self.loaded.std, self.resize, opts.mode,
                opts.crop, opts.stride, flip=opts.flip, device=opts.device,
            )  # fmt: skip

        return self._map(image, one)

    def predict_proba(self, image: Images) -> np.ndarray | list[np.ndarray]:
        """Class probabilities ``K×H×W`` float32 (softmax) at each input's size; batches as
        :meth:`predict` (a ``B×H×W×3`` array gives ``B×K×H×W``)."""

        def one(rgb: np.ndarray) -> np.ndarray:
            x = image_to_tensor(rgb, self.loaded.mean, self.loaded.std, self.resize).to(self.device)
            with torch.inference_mode():
                logits = infer_with(
                    self.loaded.model, x, self.options, tuple(rgb.shape[:2]), self.num_classes
                )
                return F.softmax(logits.float(), dim=1)[0].cpu().numpy()

        return self._map(image, one)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """``H×W×3`` uint8 colours of a trainId map (255 / unknown ids black)."""
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise DudaError(f"colorize: expected an H×W label map, got shape {labels.shape}")
        return colorize(labels, self.palette)

    def overlay(self, image: Image, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The image blended with the colours of ``labels`` (``H×W×3`` uint8)."""
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
    return Segmenter(load_inference_model(path, which=which), device, **options)
