"""ONNX files written by ``duda export``: an onnxruntime session as a numpy callable, and the
:class:`~duda.inference.InferenceModel` rebuilt from the file and its ``metadata_props`` alone.

The metadata (model name, class names, palette, mean, std, test resize, architecture spec) are
JSON strings; ``duda.deploy.onnx_export`` writes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from duda.errors import CheckpointError, DudaError
from duda.inference.model import InferenceModel

FORMAT_TAG = "duda-onnx-1"
# metadata_props keys (values are JSON strings)
_META_KEYS = ("model", "num_classes", "classes", "palette", "mean", "std", "resize", "spec")


def parse_onnx_metadata(props: dict[str, str], source: str) -> dict[str, Any]:
    """Decode and check the metadata written by :func:`onnx_metadata`."""
    if props.get("format") != json.dumps(FORMAT_TAG):
        raise CheckpointError(
            f"{source}: not a duda ONNX export (metadata 'format' is {props.get('format')!r}, "
            f"expected {FORMAT_TAG!r}); export it with `duda export`"
        )
    missing = [k for k in _META_KEYS if k not in props]
    if missing:
        raise CheckpointError(f"{source}: ONNX metadata lacks {missing}")
    try:
        meta = {k: json.loads(props[k]) for k in _META_KEYS}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{source}: ONNX metadata is not valid JSON ({exc})") from None
    palette = np.asarray(meta["palette"], dtype=np.int64)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(meta["classes"]) != meta["num_classes"]:
        raise CheckpointError(
            f"{source}: ONNX metadata inconsistent: {meta['num_classes']} classes, "
            f"{len(meta['classes'])} names, palette shape {palette.shape}"
        )
    return meta


class OnnxLogits:
    """A numpy callable around an onnxruntime session: B×3×H×W float32 → B×K×h×w logits."""

    min_input_side = 32  # exported duda models, as SegmentationModel.min_input_side

    def __init__(self, path: str | os.PathLike, threads: int = 0, optimize: bool = True) -> None:
        import onnxruntime as ort  # in here: an optional dependency (the `export` extra)

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0 = onnxruntime's choice (all cores)
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if optimize
            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointError(
                f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})"
            ) from None
        self.path = Path(path)
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)  # ints for fixed axes, strings for dynamic ones

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def check_input(self, x: np.ndarray) -> None:
        """DudaError naming the expected shape when ``x`` does not fit a fixed-size export."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise DudaError(f"{self.path}: expected input B×3×H×W, got shape {tuple(x.shape)}")
        for axis in (2, 3):
            want = self.input_shape[axis]
            if isinstance(want, int) and want != x.shape[axis]:
                raise DudaError(
                    f"{self.path}: exported for fixed input {self.input_shape[2]}×{self.input_shape[3]}, "
                    f"got {x.shape[2]}×{x.shape[3]}; export with --dynamic, or predict with "
                    "--no-resize/--scale or sliding windows of that size"
                )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.check_input(x)
        return self.session.run(None, {self.input_name: x})[0]


def load_onnx_model(path: str | os.PathLike, threads: int = 0) -> InferenceModel:
    """An :class:`InferenceModel` whose ``model`` is an :class:`OnnxLogits` numpy callable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file not found: {path}")
    runner = OnnxLogits(path, threads=threads)
    meta = parse_onnx_metadata(runner.metadata(), str(path))
    return InferenceModel(
        model=runner,
        model_name=meta["model"],
        num_classes=int(meta["num_classes"]),
        classes=list(meta["classes"]),
        palette=np.asarray(meta["palette"], dtype=np.uint8),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        resize=tuple(meta["resize"]) if meta["resize"] else None,
        spec=dict(meta["spec"]),
    )
