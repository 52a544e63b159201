"""ONNX export of a segmentation model, checked against PyTorch, with its metadata on board.

The exported graph takes ``image`` (float32 B×3×H×W, normalised with the model's mean/std) and
returns ``logits`` (float32 B×K×H/s×W/s). Everything needed to feed it and show its output —
model name, class names, palette, mean, std, test resize, architecture spec — is stored in the
file's ``metadata_props`` as JSON strings, so an ``.onnx`` file is a complete deployable model
(:func:`duda.inference.load_onnx_model` rebuilds an :class:`InferenceModel` from it alone).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` at opset 17. The
torch.export-based exporter needs the ``onnxscript`` package (not a dependency here) and its
output has changed between torch releases; the legacy tracer handles these static-graph models
exactly (max |Δlogit| ~1e-7 measured) and opset 17 (LayerNormalization as one op) runs on every
onnxruntime from 1.14 on, including 1.32 used here.

An export is only kept when onnxruntime and PyTorch agree: it is written to a temporary file
next to the destination, checked, and renamed into place only if the per-pixel argmax agreement
is at least ``min_agreement`` (99.9% by default); otherwise the temporary file is deleted and an
:class:`ExportCheckError` raised, leaving any earlier file at the destination untouched.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from duda.errors import DudaError
from duda.files import atomic_path, check_output_file
from duda.inference.image import image_to_tensor, load_rgb
from duda.inference.model import InferenceModel
from duda.inference.onnx import FORMAT_TAG, OnnxLogits, load_onnx_model, parse_onnx_metadata

__all__ = [
    "FORMAT_TAG",
    "OPSET",
    "ExportCheck",
    "ExportCheckError",
    "ExportResult",
    "OnnxLogits",
    "check_against_torch",
    "export_onnx",
    "load_onnx_model",
    "onnx_metadata",
    "parse_onnx_metadata",
    "write_onnx_metadata",
]

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class ExportCheckError(DudaError):
    """onnxruntime's output disagrees with PyTorch's beyond the allowed tolerance."""


@dataclass
class ExportCheck:
    """How closely the exported graph reproduces PyTorch on the checked inputs."""

    max_abs_diff: float  # largest |logit_onnx − logit_torch| over all checked inputs
    agreement: float  # share of output pixels whose argmax class is the same
    pixels: int  # output pixels compared
    inputs: int  # input tensors compared

    def summary(self) -> str:
        return (
            f"{self.inputs} inputs, {self.pixels} pixels: max |Δlogit| {self.max_abs_diff:.3g}, "
            f"argmax agreement {100 * self.agreement:.4f}%"
        )


# --------------------------------------------------------------------------- metadata


def onnx_metadata(loaded: InferenceModel) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: every value a JSON string."""
    values: dict[str, Any] = {
        "format": FORMAT_TAG,
        "model": loaded.model_name,
        "num_classes": int(loaded.num_classes),
        "classes": list(loaded.classes),
        "palette": np.asarray(loaded.palette).astype(int).tolist(),
        "mean": [float(v) for v in loaded.mean],
        "std": [float(v) for v in loaded.std],
        "resize": list(loaded.resize) if loaded.resize else None,
        "spec": loaded.spec,
    }
    return {key: json.dumps(value) for key, value in values.items()}


def write_onnx_metadata(path: Path, props: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX file at ``path`` (in place)."""
    import onnx  # in here: an optional dependency (the `export` extra)

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


# --------------------------------------------------------------------------- export


def torch_to_onnx(
    model: nn.Module, path: Path, height: int, width: int, dynamic: bool, opset: int = OPSET
) -> None:
    """Trace ``model`` (eval, fp32, CPU) at ``height×width`` into an ONNX graph at ``path``."""
    model = model.float().cpu().eval()
    dummy = torch.zeros(1, 3, height, width)
    axes = None
    if dynamic:
        axes = {
            INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAME: {0: "batch", 2: "out_h", 3: "out_w"},
        }
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-level shape checks (e.g. "skip resize if sizes match");
        # they are shape-only and exact for every input size, which the check below verifies.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def compare_outputs(torch_logits: np.ndarray, onnx_logits: np.ndarray) -> tuple[float, int, int]:
    """(max |Δ|, pixels whose argmax agrees, pixels) of two B×K×h×w logit arrays."""
    if torch_logits.shape != onnx_logits.shape:
        raise ExportCheckError(
            f"ONNX output shape {onnx_logits.shape} differs from PyTorch's {torch_logits.shape}"
        )
    diff = float(np.abs(torch_logits - onnx_logits).max()) if torch_logits.size else 0.0
    same = int((torch_logits.argmax(1) == onnx_logits.argmax(1)).sum())
    return diff, same, int(torch_logits.shape[0] * torch_logits.shape[2] * torch_logits.shape[3])


def check_against_torch(
    model: nn.Module, runner: Callable[[np.ndarray], np.ndarray], inputs: Iterable[np.ndarray]
) -> ExportCheck:
    """Run every input through both and measure the differences."""
    model = model.float().cpu().eval()
    worst, same, pixels, count = 0.0, 0, 0, 0
    for x in inputs:
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = runner(x)
        d, s, p = compare_outputs(ref, got)
        # NaN in either output must fail, not vanish in max()
        worst = float("inf") if not np.isfinite(d) else max(worst, d)
        same, pixels, count = same + s, pixels + p, count + 1
    if count == 0:
        raise ExportCheckError("no inputs to check the export with")
    return ExportCheck(max_abs_diff=worst, agreement=same / pixels, pixels=pixels, inputs=count)


def random_inputs(height: int, width: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Standard-normal 1×3×H×W inputs (the scale of normalised images)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, height, width), dtype=np.float32) for _ in range(count)]


def image_inputs(
    paths: Sequence[Path],
    mean: Sequence[float],
    std: Sequence[float],
    size: tuple[int, int] | None,
    scale: tuple[int, int] | None,
) -> list[np.ndarray]:
    """Normalised 1×3×H×W inputs from image files: resized to exactly ``size`` = (H, W) for a
    fixed-size export, else keep-ratio to ``scale`` = (W, H) (the test scale)."""
    out = []
    for p in paths:
        rgb = load_rgb(p)
        if size is not None:
            rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            out.append(image_to_tensor(rgb, mean, std, None).numpy())
        else:
            out.append(image_to_tensor(rgb, mean, std, scale).numpy())
    return out


@dataclass
class ExportResult:
    path: Path
    check: ExportCheck
    random: ExportCheck
    images: ExportCheck | None
    size_bytes: int


def export_onnx(
    loaded: InferenceModel,
    out: str | os.PathLike,
    height: int,
    width: int,
    dynamic: bool = False,
    check_images: Sequence[Path] = (),
    random_count: int = 2,
    min_agreement: float = 0.999,
    opset: int = OPSET,
) -> ExportResult:
    """Export ``loaded.model`` to ``out`` and keep it only if onnxruntime agrees with PyTorch.

    Checked on ``random_count`` random inputs (plus, for a dynamic export, random inputs at a
    second size) and on ``check_images``. Raises :class:`ExportCheckError` (no file written) when
    the argmax agreement over all checked pixels is below ``min_agreement``.
    """
    if not isinstance(loaded.model, nn.Module):
        raise DudaError("export needs a PyTorch model (a deploy folder or checkpoint), not an ONNX file")
    if height < 32 or width < 32:
        raise DudaError(f"export size {height}×{width}: expected at least 32×32 (the backbone's stride)")
    out = Path(out)
    if out.suffix != ".onnx":
        raise DudaError(f"--out {out}: expected a file name ending in .onnx")
    check_output_file(out, "--out")
    with atomic_path(out, suffix=".tmp.onnx", what="ONNX file") as tmp:
        torch_to_onnx(loaded.model, tmp, height, width, dynamic, opset)
        write_onnx_metadata(tmp, onnx_metadata(loaded))
        runner = OnnxLogits(tmp)
        rand = random_inputs(height, width, random_count)
        if dynamic:  # a second, different size proves the graph is not frozen to the traced one
            rand += random_inputs(height // 2 + 16, width // 2 + 8, 1, seed=1)
        rand_check = check_against_torch(loaded.model, runner, rand)
        img_check = None
        if check_images:
            size = None if dynamic else (height, width)
            scale = loaded.resize or (width, height)
            imgs = image_inputs(check_images, loaded.mean, loaded.std, size, scale)
            img_check = check_against_torch(loaded.model, runner, imgs)
        total = merge_checks([c for c in (rand_check, img_check) if c is not None])
        if total.agreement < min_agreement or not np.isfinite(total.max_abs_diff):
            raise ExportCheckError(
                f"ONNX export of {loaded.model_name} rejected: {total.summary()}, below the required "
                f"{100 * min_agreement:.2f}%; {out} was not written"
            )
        del runner  # release the session's file handle before the rename
    return ExportResult(out, total, rand_check, img_check, out.stat().st_size)


def merge_checks(checks: Sequence[ExportCheck]) -> ExportCheck:
    """One summary of several checks, weighting agreement by pixels."""
    pixels = sum(c.pixels for c in checks)
    return ExportCheck(
        max_abs_diff=max(c.max_abs_diff for c in checks),
        agreement=sum(c.agreement * c.pixels for c in checks) / pixels,
        pixels=pixels,
        inputs=sum(c.inputs for c in checks),
    )
