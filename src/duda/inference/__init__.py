"""Inference: load a network from whatever holds it, run it over images, ship it.

- :mod:`~duda.inference.options`: :class:`InferenceOptions` (mode, crop, stride, flip, bf16, device)
- :mod:`~duda.inference.modes`: whole-image and sliding-window logits (:func:`infer`, ...)
- :mod:`~duda.inference.image`: one image's preprocessing, label map and colours
- :mod:`~duda.inference.segmenter`: :class:`Segmenter` and :func:`load_model` (``duda.load_model``)
- :mod:`~duda.inference.loaders`: :func:`load_inference_model`, one loader per source
  (:func:`register_loader`); :mod:`~duda.inference.model`: :class:`InferenceModel` and the deploy
  folder (:func:`save_deploy_model`); :mod:`~duda.inference.onnx`: ONNX files;
  :mod:`~duda.inference.formats`: Hugging Face SegFormer folders and published mmseg checkpoints
- :mod:`~duda.inference.network_files`: networks from files for the methods (installed below)

The package sits above the methods (it rebuilds a run's networks from their specs) and below the
engine, evaluation and deploy; it imports none of them.
"""

from duda.inference.device import resolve_device
from duda.inference.loaders import Loader, Source, load_inference_model, register_loader, registered_loaders
from duda.inference.model import InferenceModel, dataset_meta, load_deploy_folder, save_deploy_model
from duda.inference.modes import infer, infer_slide, infer_whole, infer_with
from duda.inference.network_files import NETWORK_FILES
from duda.inference.onnx import OnnxLogits, load_onnx_model
from duda.inference.options import DEFAULT_CROP, DEFAULT_STRIDE, MODES, InferenceOptions
from duda.inference.segmenter import Segmenter, as_rgb, load_model
from duda.methods.base import set_network_files

set_network_files(NETWORK_FILES)

__all__ = [
    "DEFAULT_CROP",
    "DEFAULT_STRIDE",
    "MODES",
    "InferenceModel",
    "InferenceOptions",
    "Loader",
    "OnnxLogits",
    "Segmenter",
    "Source",
    "as_rgb",
    "dataset_meta",
    "infer",
    "infer_slide",
    "infer_whole",
    "infer_with",
    "load_deploy_folder",
    "load_inference_model",
    "load_model",
    "load_onnx_model",
    "register_loader",
    "registered_loaders",
    "resolve_device",
    "save_deploy_model",
]
