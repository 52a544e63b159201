"""Static INT8 quantization of a duda ONNX export, kept only if it still agrees with fp32.

:func:`quantize_export` turns a PyTorch model into an INT8 ``.onnx`` file in five steps, all in a
private temporary folder beside the destination (removed whatever happens):

1. fp32 export with :func:`~duda.deploy.onnx_export.export_onnx` (checked against PyTorch as
   usual, ≥ 99.9% argmax agreement).
2. ``onnxruntime.quantization.quant_pre_process``: symbolic shape inference and onnxruntime's
   basic graph optimisation (constant folding, redundant-node removal). The quantizer only
   quantizes a tensor whose shape it knows, and onnxruntime recommends optimising *before* adding
   Q/DQ nodes: fusions applied afterwards cannot see through them, and folded constants would
   otherwise be calibrated and quantized as activations. (Measured: same agreement with and
   without it on the tiny trained models, whose exported graphs are already clean; kept for
   larger graphs and because it costs seconds.)
3. ``onnxruntime.quantization.quantize_static`` in the QDQ format (QuantizeLinear/
   DequantizeLinear pairs around the float ops, which onnxruntime's CPU provider fuses into
   integer kernels): weights int8, symmetric, **per output channel**; activations uint8,
   asymmetric, one scale per tensor, their ranges calibrated with MinMax on target-domain images
   preprocessed exactly as for inference (keep-ratio resize to the test scale, then the model's
   mean/std). Signed int8 weights with unsigned uint8 activations is onnxruntime's recommended
   pairing on x86 CPUs. Every operator type onnxruntime can quantize is quantized (its default:
   Conv, MatMul, Gemm, but also Add, Mul, Softmax, Concat, Resize, ..., so consecutive ops stay in
   int8). Quantizing only Conv/MatMul/Gemm agreed slightly better with fp32 on two trained models
   (99.25/99.34% vs 99.14/99.16% of pixels) but was slower: SegFormer-B0 at 512×1024, 2 threads,
   12 interleaved runs: fp32 1.40 s, all ops 1.08 s, Conv/MatMul/Gemm only 1.32 s (docs/deploy.md).
   ``reduce_range`` (7-bit weights) is on: without VNNI, the AVX2 int8 kernels add pairs
   of u8×s8 products in 16 bits, which saturate with full 8-bit weights (measured: agreement fell
   from 99.1% to 95.1% on this AVX2 machine without it); with 7 bits they cannot, on any CPU, at a
   small cost in weight precision.
4. The fp32 export's metadata (classes, palette, mean/std, test scale, spec) is copied onto the
   INT8 file, so ``duda predict`` / ``duda eval`` take it like any export.
5. The gate: fp32 and INT8 onnxruntime sessions predict the check images (a labelled val set when
   given, else the calibration images); the INT8 file is renamed into place only if the per-pixel
   argmax agreement of the full-resolution predictions is at least ``min_agreement``, otherwise
   :class:`QuantizeCheckError` is raised and nothing is written. With labels the mIoU of both is
   reported too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from duda.data.datasets import build_dataset, build_dataset_from_config
from duda.deploy.onnx_export import (
    ExportCheckError,
    OnnxLogits,
    export_onnx,
    write_onnx_metadata,
)
from duda.errors import DatasetError, DudaError
from duda.evaluation.metrics import IoUMetric
from duda.files import atomic_path, check_output_file
from duda.inference import InferenceModel
from duda.inference.image import image_to_tensor, keep_ratio_size, load_rgb
from duda.inference.modes import infer_whole
from duda.methods import load_config

#: Default ``--min-agreement`` of an INT8 export (share of full-resolution pixels whose argmax
#: class is the same in INT8 and fp32). Chosen from measurements on two trained models
#: (docs/deploy.md): calibrated on target images they reach 99.14% and 99.16%; calibrated on
#: random noise 96.9–98.2%, with a wrong mean/std 29–48%.
INT8_MIN_AGREEMENT = 0.985
#: Operator types whose weights :func:`qdq_summary` inspects (those that carry the FLOPs).
WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: 7-bit weights: no 16-bit saturation in the AVX2 u8×s8 kernels of CPUs without VNNI.
REDUCE_RANGE = True


class QuantizeCheckError(ExportCheckError):
    """The INT8 model disagrees with fp32 more than allowed; nothing was written."""


class QuantizeError(DudaError):
    """onnxruntime's quantizer failed on the exported graph."""


# --------------------------------------------------------------------------- inputs


def pick_evenly(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items spread evenly over ``items`` (all when there are no more than ``count``),
    so that a sorted folder's sequences or cities are all represented."""
    if count <= 0 or len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def model_input(
    rgb: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[int, int] | None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The 1×3×H×W float32 network input of an RGB image, as ``duda predict`` makes it: keep-ratio
    resize to the test ``scale`` = (W, H), then (x − mean) / std. For a fixed-size export
    (``size`` = (H, W)) an image whose keep-ratio size differs is resized to exactly ``size``."""
    if size is not None:
        h, w = rgb.shape[:2]
        target = keep_ratio_size(w, h, scale) if scale else (w, h)
        if target != (size[1], size[0]):
            rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            return image_to_tensor(rgb, mean, std, None).numpy()
    return image_to_tensor(rgb, mean, std, scale).numpy()


def fixed_size(runner: OnnxLogits) -> tuple[int, int] | None:
    """(H, W) of a fixed-size export, None for a dynamic one."""
    h, w = runner.input_shape[2], runner.input_shape[3]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


class InputFeed:
    """A calibration data reader for ``quantize_static``: one ``{input: 1×3×H×W}`` per image,
    loaded and preprocessed only when asked for (a few hundred full-size images would not fit
    in memory at once)."""

    def __init__(self, name: str, inputs: Callable[[], Iterator[np.ndarray]], count: int) -> None:
        self.name = name
        self.make = inputs
        self.count = count
        self.rewind()

    def rewind(self) -> None:
        self.it = self.make()

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.it, None)
        return None if x is None else {self.name: x}

    def __iter__(self) -> InputFeed:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return self.count


def image_feed(
    paths: Sequence[Path], loaded: InferenceModel, size: tuple[int, int] | None, name: str = "image"
) -> InputFeed:
    """Calibration inputs from image files, preprocessed as for inference."""

    def inputs() -> Iterator[np.ndarray]:
        for p in paths:
            yield model_input(load_rgb(p), loaded.mean, loaded.std, loaded.resize, size)

    return InputFeed(name, inputs, len(paths))


def array_feed(arrays: Sequence[np.ndarray], name: str = "image") -> InputFeed:
    """Calibration inputs given as arrays (e.g. random ones for a latency benchmark)."""
    return InputFeed(name, lambda: iter(arrays), len(arrays))


# --------------------------------------------------------------------------- quantization


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs through the root logger (e.g. advice already followed); keep
    it to errors while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    feed: InputFeed,
    work_dir: Path,
    *,
    reduce_range: bool = REDUCE_RANGE,
    calibrate_method: str = "MinMax",
    preprocess: bool = True,
    op_types: Sequence[str] | None = None,
) -> None:
    """Pre-process and statically quantize ``fp32_path`` into ``out_path`` (QDQ, per-channel int8
    weights, uint8 activations calibrated on ``feed``); the fp32 metadata is carried over.
    ``work_dir`` holds the intermediate graph."""
    # in here: onnx and onnxruntime are optional dependencies (the `export` extra)
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if len(feed) == 0:
        raise QuantizeError("no calibration inputs")
    prepared = work_dir / "preprocessed.onnx"
    props = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    method = getattr(CalibrationMethod, calibrate_method)
    try:
        with _quiet_quantizer():
            if preprocess:
                quant_pre_process(str(fp32_path), str(prepared))
            else:
                prepared = fp32_path
            quantize_static(
                str(prepared),
                str(out_path),
                feed,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                op_types_to_quantize=list(op_types) if op_types else None,  # None: all it can
            )
    except DudaError:
        raise  # e.g. an unreadable calibration image, from the feed
    except Exception as exc:  # onnxruntime raises plain exceptions of many types
        raise QuantizeError(
            f"onnxruntime could not quantize {fp32_path.name} ({type(exc).__name__}: {exc})"
        ) from None
    write_onnx_metadata(out_path, props)


@dataclass
class QdqSummary:
    quantize: int  # QuantizeLinear nodes
    dequantize: int  # DequantizeLinear nodes
    weights: int  # int8 weight initializers dequantized into Conv / MatMul / Gemm
    per_channel_weights: int  # of those, the ones with one scale per output channel
    float_ops: int  # Conv / MatMul / Gemm nodes whose weight is still float


def qdq_summary(path: str | os.PathLike) -> QdqSummary:
    """Count the Q/DQ nodes of an ONNX file and how its Conv/MatMul/Gemm weights are stored."""
    import onnx  # in here: an optional dependency (the `export` extra)

    proto = onnx.load(str(path))
    consts = {t.name: t for t in proto.graph.initializer}
    nodes = proto.graph.node
    int8_weights = {}  # DequantizeLinear output -> per channel?
    for n in nodes:
        if n.op_type != "DequantizeLinear":
            continue
        data, scale = consts.get(n.input[0]), consts.get(n.input[1])
        if data is not None and scale is not None and data.data_type == onnx.TensorProto.INT8:
            int8_weights[n.output[0]] = len(scale.dims) == 1 and scale.dims[0] > 1
    weights = per_channel = float_ops = 0
    for n in nodes:
        if n.op_type not in WEIGHT_OPS or len(n.input) < 2:
            continue
        if n.input[1] in int8_weights:
            weights += 1
            per_channel += int8_weights[n.input[1]]
        elif n.input[1] in consts:
            float_ops += 1
    q = sum(n.op_type == "QuantizeLinear" for n in nodes)
    dq = sum(n.op_type == "DequantizeLinear" for n in nodes)
    return QdqSummary(q, dq, weights, per_channel, float_ops)


# --------------------------------------------------------------------------- comparison


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(pixels with the same label, pixels) of two label maps of the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    return int((a == b).sum()), int(a.size)


@dataclass
class Comparison:
    """fp32 vs INT8 on the check images."""

    agreement: float  # share of full-resolution pixels with the same argmax class
    pixels: int
    images: int
    source: str  # what the images were
    miou_fp32: float | None = None  # with labels
    miou_int8: float | None = None
    labelled_pixels: int = 0

    def summary(self) -> str:
        text = (
            f"argmax agreement int8 vs fp32 {100 * self.agreement:.2f}% over {self.pixels / 1e6:.2f} M "
            f"pixels of {self.images} {self.source}"
        )
        if self.miou_fp32 is not None and self.miou_int8 is not None:
            text += (
                f"; mIoU fp32 {100 * self.miou_fp32:.2f}, int8 {100 * self.miou_int8:.2f} "
                f"(Δ {100 * (self.miou_int8 - self.miou_fp32):+.2f})"
            )
        return text


def predict_full(runner: Callable, x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """H×W argmax labels of one input, logits upsampled to ``out_hw`` as in ``duda eval``."""
    logits = infer_whole(runner, torch.from_numpy(x), out_hw)
    return logits.argmax(dim=1)[0].numpy()


def compare_models(
    fp32: Callable,
    int8: Callable,
    samples: Iterable[tuple[np.ndarray, tuple[int, int], np.ndarray | None]],
    num_classes: int,
    source: str,
) -> Comparison:
    """Agreement (and mIoU of both where labels are given) over ``samples`` of (input, original
    H×W, trainId label or None)."""
    m_fp32, m_int8 = IoUMetric(num_classes), IoUMetric(num_classes)
    same = pixels = images = labelled = 0
    for x, out_hw, gt in samples:
        a, b = predict_full(fp32, x, out_hw), predict_full(int8, x, out_hw)
        s, p = pixel_agreement(a, b)
        same, pixels, images = same + s, pixels + p, images + 1
        if gt is not None:
            labelled += 1
            m_fp32.update(a, gt)
            m_int8.update(b, gt)
    if images == 0:
        raise DudaError("no images to compare the INT8 model with")
    out = Comparison(same / pixels, pixels, images, source)
    if labelled == images:
        r32, r8 = m_fp32.compute(), m_int8.compute()
        out.miou_fp32, out.miou_int8, out.labelled_pixels = r32.miou, r8.miou, r32.num_pixels
    return out


def dataset_samples(
    dataset, loaded: InferenceModel, size: tuple[int, int] | None, limit: int | None = None
) -> Iterator[tuple[np.ndarray, tuple[int, int], np.ndarray | None]]:
    """(input, original H×W, label) of a labelled dataset's images."""
    count = len(dataset) if not limit else min(limit, len(dataset))
    for i in pick_evenly(range(len(dataset)), count):
        rgb, gt = dataset.load_pair(i)
        yield model_input(rgb, loaded.mean, loaded.std, loaded.resize, size), tuple(rgb.shape[:2]), gt


def image_samples(
    paths: Sequence[Path], loaded: InferenceModel, size: tuple[int, int] | None
) -> Iterator[tuple[np.ndarray, tuple[int, int], None]]:
    for p in paths:
        rgb = load_rgb(p)
        yield model_input(rgb, loaded.mean, loaded.std, loaded.resize, size), tuple(rgb.shape[:2]), None


# --------------------------------------------------------------------------- validation data


def open_val_dataset(spec: str | os.PathLike, split: str = "val", kind: str | None = None):
    """The labelled dataset named by ``--val``: a YAML experiment config (its ``data.val``, as
    ``duda eval`` uses), or a dataset root — Cityscapes layout (``leftImg8bit/``), a folder
    dataset (``images/`` + ``labels/``), or any reader named by ``kind`` — with ``split``."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DatasetError(f"--val {path}: config file not found")
        cfg = load_config(str(path))
        if cfg.data.val is None:
            raise DatasetError(f"--val {path}: data.val is not set in this config")
        dataset = build_dataset_from_config(cfg.data.val)
    else:
        if not path.is_dir():
            raise DatasetError(f"--val {path}: not found (expected a dataset root folder or a YAML config)")
        if kind is None:
            if (path / "leftImg8bit").is_dir():
                kind = "cityscapes"
            elif (path / "images").is_dir():
                kind = "folder"
            else:
                raise DatasetError(
                    f"--val {path}: neither a Cityscapes root (leftImg8bit/, gtFine/) nor a folder dataset "
                    "(images/, labels/); name the layout with --val-type"
                )
        dataset = build_dataset(kind, path, split)
    if not dataset.has_labels:
        raise DatasetError(f"--val {path}: split {dataset.split!r} has no labels; expected a labelled split")
    return dataset


# --------------------------------------------------------------------------- the export


@dataclass
class Int8Result:
    path: Path
    fp32_check: Any  # ExportCheck of the intermediate fp32 export
    comparison: Comparison
    calibration_images: int
    size_bytes: int
    fp32_size_bytes: int
    qdq: QdqSummary


def quantize_export(
    loaded: InferenceModel,
    out: str | os.PathLike,
    height: int,
    width: int,
    calibration: Sequence[Path],
    *,
    dynamic: bool = False,
    val_dataset=None,
    max_val_images: int | None = None,
    min_agreement: float = INT8_MIN_AGREEMENT,
    opset: int = 17,
    reduce_range: bool = REDUCE_RANGE,
    log: Callable[[str], None] = lambda s: None,
) -> Int8Result:
    """Export ``loaded`` to a statically quantized INT8 ONNX file at ``out``, calibrated on the
    images ``calibration``; kept only when its argmax agreement with fp32 (on ``val_dataset`` if
    given, else on the calibration images) is at least ``min_agreement``. Otherwise
    :class:`QuantizeCheckError` and no file, temporary or final, is left behind."""
    out = Path(out)
    _check_request(loaded, out, calibration, val_dataset)
    with (
        atomic_path(out, suffix=".tmp.onnx", what="INT8 ONNX file") as final,
        tempfile.TemporaryDirectory(prefix=f".{out.name}.int8-", dir=out.parent) as work_name,
    ):
        work = Path(work_name)
        fp32_path = work / "fp32.onnx"
        log("exporting fp32 ...")
        fp32 = export_onnx(loaded, fp32_path, height, width, dynamic=dynamic, opset=opset)
        runner32 = OnnxLogits(fp32_path)
        size = fixed_size(runner32)
        log(f"calibrating on {len(calibration)} images and quantizing ...")
        feed = image_feed(calibration, loaded, size, runner32.input_name)
        quantize_onnx(fp32_path, final, feed, work, reduce_range=reduce_range)
        runner8 = OnnxLogits(final)
        samples, source = _gate_samples(loaded, size, calibration, val_dataset, max_val_images, log)
        comparison = compare_models(runner32, runner8, samples, loaded.num_classes, source)
        if not comparison.agreement >= min_agreement:
            raise QuantizeCheckError(
                f"INT8 export of {loaded.model_name} rejected: {comparison.summary()}; below the required "
                f"--min-agreement {100 * min_agreement:.2f}%. {out} was not written. Check that "
                "--calibration holds target-domain images like those the model will see"
            )
        del runner8, runner32  # release the sessions before the rename
        qdq = qdq_summary(final)
        fp32_size = fp32_path.stat().st_size
    return Int8Result(out, fp32.check, comparison, len(calibration), out.stat().st_size, fp32_size, qdq)


def _check_request(loaded: InferenceModel, out: Path, calibration: Sequence[Path], val_dataset) -> None:
    """DudaError / DatasetError for a request :func:`quantize_export` cannot serve."""
    if out.suffix != ".onnx":
        raise DudaError(f"--out {out}: expected a file name ending in .onnx")
    if not calibration:
        raise DatasetError("--calibration: no images to calibrate with")
    if val_dataset is not None and val_dataset.labels.num_classes != loaded.num_classes:
        raise DatasetError(
            f"--val {val_dataset.root}: {val_dataset.labels.num_classes} classes, but {loaded.model_name} "
            f"predicts {loaded.num_classes}"
        )
    check_output_file(out, "--out")


def _gate_samples(
    loaded: InferenceModel,
    size: tuple[int, int] | None,
    calibration: Sequence[Path],
    val_dataset,
    max_val_images: int | None,
    log: Callable[[str], None],
) -> tuple[Iterable, str]:
    """(samples, where they come from) that the INT8 file is compared with fp32 on."""
    if val_dataset is not None:
        n = min(max_val_images or len(val_dataset), len(val_dataset))
        log(f"comparing int8 with fp32 on {n} val images ...")
        source = f"{val_dataset.name} {val_dataset.split} images ({val_dataset.root})"
        return dataset_samples(val_dataset, loaded, size, max_val_images), source
    log(f"comparing int8 with fp32 on the {len(calibration)} calibration images ...")
    return image_samples(calibration, loaded, size), "calibration images (no --val)"
