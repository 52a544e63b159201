"""`duda export`: a deployable ONNX file, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX and check it against PyTorch",
        description=(
            "Export a trained model to ONNX (opset 17, input 'image' B×3×H×W normalised float32, output "
            "'logits' B×K×H/s×W/s). Class names, palette, mean/std, test scale and architecture are stored "
            "in the file's metadata, so `duda predict` and `duda eval` accept the .onnx file directly. "
            "The export is run with onnxruntime on random inputs (and --check-images) and compared with "
            "PyTorch; it is kept only if the per-pixel argmax agreement is at least --min-agreement."
        ),
    )
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="deploy folder (model.json + model.safetensors), run folder or training checkpoint .pt",
    )
    parser.add_argument(
        "--format",
        choices=("onnx", "hf"),
        default="onnx",
        help="onnx (default), or hf: a Hugging Face SegformerForSemanticSegmentation folder "
        "(segformer_mit* models only; --out is then a folder)",
    )
    parser.add_argument("--out", required=True, metavar="FILE.onnx|DIR", help="output file (hf: folder)")
    parser.add_argument(
        "--which",
        default="student",
        help="network of a training checkpoint: student (default), teacher, large, ...",
    )
    parser.add_argument(
        "--height", type=int, default=None, help="input height (default: the model's test scale, else 512)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="input width (default: the model's test scale, else 1024)"
    )
    parser.add_argument(
        "--dynamic", action="store_true", help="dynamic batch, height and width (default: fixed size)"
    )
    parser.add_argument(
        "--check-images", metavar="DIR", default=None, help="also compare on these images (file or folder)"
    )
    parser.add_argument(
        "--max-check-images", type=int, default=8, help="at most this many of --check-images (default 8)"
    )
    parser.add_argument(
        "--min-agreement", type=float, default=None,
        help="required argmax agreement, 0..1 (default 0.999 against PyTorch; with --quantize int8 "
        f"{INT8_DEFAULT} against the fp32 ONNX model: a good INT8 export keeps above it, one calibrated "
        "on noise or with a wrong mean/std falls below; see docs/deploy.md)",
    )  # fmt: skip
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    add_int8_arguments(parser)
    parser.set_defaults(func=run_export)


# INT8 static quantization (--quantize int8): its arguments and its branch of run_export.
INT8_DEFAULT = 0.985  # duda.deploy.quantize.INT8_MIN_AGREEMENT (not imported: keeps `duda --help` fast)


def add_int8_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "INT8 quantization (--quantize int8)",
        "onnxruntime static quantization: QDQ format, per-channel int8 weights, uint8 activations "
        "calibrated on --calibration images preprocessed as for inference. The INT8 file is kept only "
        "if its per-pixel argmax agreement with the fp32 export (on --val, else on the calibration "
        "images) is at least --min-agreement; with --val the mIoU of fp32 and INT8 is reported too.",
    )
    group.add_argument("--quantize", choices=("int8",), default=None, help="quantize the ONNX export")
    group.add_argument(
        "--calibration", metavar="DIR", default=None,
        help="target-domain images (file or folder, searched recursively) to calibrate activations on",
    )  # fmt: skip
    group.add_argument(
        "--max-calibration-images", type=int, default=64, metavar="N",
        help="calibrate on at most N images, spread evenly over the folder (default 64)",
    )  # fmt: skip
    group.add_argument(
        "--val", metavar="ROOT|CONFIG", default=None,
        help="labelled images to compare fp32 and INT8 on: a YAML config (its data.val, as duda eval) or a "
        "dataset root (Cityscapes layout or images/ + labels/)",
    )  # fmt: skip
    group.add_argument("--val-split", default="val", help="split of a --val root (default val)")
    group.add_argument(
        "--val-type", default=None,
        choices=("cityscapes", "acdc", "darkzurich", "gta", "synthia", "folder"),
        help="layout of a --val root (default: detected, cityscapes or folder)",
    )  # fmt: skip
    group.add_argument(
        "--max-val-images", type=int, default=None, metavar="N",
        help="compare on at most N --val images, spread evenly (default all)",
    )  # fmt: skip


def run_int8_export(args: argparse.Namespace, loaded, height: int, width: int) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from pathlib import Path

    from duda.deploy.quantize import open_val_dataset, pick_evenly, quantize_export
    from duda.errors import DudaError
    from duda.evaluation.predict import list_images
    from duda.log import info

    if args.format != "onnx":
        raise DudaError(f"--quantize int8: only with --format onnx, got --format {args.format}")
    if not args.calibration:
        raise DudaError("--quantize int8 needs --calibration DIR: target-domain images to calibrate on")
    if args.max_calibration_images < 1:
        raise DudaError(f"--max-calibration-images must be at least 1, got {args.max_calibration_images}")
    if args.max_val_images is not None and args.max_val_images < 1:
        raise DudaError(f"--max-val-images must be at least 1, got {args.max_val_images}")
    if args.check_images:
        raise DudaError("--check-images is for fp32 exports; with --quantize int8 give --val")
    if not Path(args.calibration).exists():
        raise DudaError(f"--calibration {args.calibration}: not found (expected a folder of images)")
    calibration = pick_evenly(list_images(args.calibration), args.max_calibration_images)
    val = open_val_dataset(args.val, args.val_split, args.val_type) if args.val else None
    min_agreement = INT8_DEFAULT if args.min_agreement is None else args.min_agreement
    result = quantize_export(
        loaded, args.out, height, width, calibration, dynamic=args.dynamic, val_dataset=val,
        max_val_images=args.max_val_images, min_agreement=min_agreement, opset=args.opset,
        log=info,
    )  # fmt: skip
    shape = "dynamic B×3×H×W" if args.dynamic else f"1×3×{height}×{width}"
    q = result.qdq
    print(f"exported {loaded.model_name} as INT8 ({shape}, opset {args.opset}, QDQ) to {result.path}")
    print(
        f"  file size {result.size_bytes / 1e6:.2f} MB (fp32 {result.fp32_size_bytes / 1e6:.2f} MB); "
        f"{q.quantize} QuantizeLinear, {q.dequantize} DequantizeLinear; {q.weights} Conv/MatMul weights "
        f"int8 ({q.per_channel_weights} per channel)"
    )
    print(f"  fp32 export vs PyTorch: {result.fp32_check.summary()}")
    print(f"  calibrated on {result.calibration_images} images from {args.calibration}")
    print(f"  {result.comparison.summary()} (required ≥ {100 * min_agreement:.2f}%)")
    return 0


def run_hf_export(args: argparse.Namespace) -> int:
    """``duda export --format hf``: the ONNX-only options are refused, not ignored."""
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from pathlib import Path

    from duda.api import load_model
    from duda.errors import DudaError
    from duda.inference.formats.hf import HF_CLASS, export_hf

    onnx_only = {
        "--height": args.height,
        "--width": args.width,
        "--dynamic": args.dynamic,
        "--check-images": args.check_images,
        "--quantize": getattr(args, "quantize", None),
        "--calibration": getattr(args, "calibration", None),
    }
    given = [k for k, v in onnx_only.items() if v]
    if given:
        raise DudaError(f"{', '.join(given)}: ONNX options, not used by --format hf")
    if Path(args.out).suffix == ".onnx":
        raise DudaError(f"--out {args.out}: --format hf writes a folder; give a folder name")
    loaded = load_model(args.checkpoint, which=args.which).loaded  # the loader of duda.load_model
    result = export_hf(loaded, args.out)
    print(f"exported {loaded.model_name} as {HF_CLASS} to {result.path}/ ({', '.join(result.files)})")
    h, w = result.check_shape
    print(
        f"  transformers vs duda on a random 1×3×{h}×{w} input: max |Δlogit| {result.max_abs_diff:.2e}, "
        f"argmax agreement {100 * result.agreement:.2f}%"
    )
    return 0


def default_size(resize: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of the export: the test scale (W, H) as landscape, else 512×1024."""
    if not resize:
        return 512, 1024
    return min(resize), max(resize)


def run_export(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from pathlib import Path

    from duda.api import load_model
    from duda.deploy.onnx_export import export_onnx
    from duda.errors import DudaError
    from duda.evaluation.predict import list_images

    if args.format == "hf":
        return run_hf_export(args)
    if args.min_agreement is not None and not 0.0 < args.min_agreement <= 1.0:
        raise DudaError(f"--min-agreement must be in (0, 1], got {args.min_agreement}")
    int8_only = [f"--{k.replace('_', '-')}" for k in ("calibration", "val") if getattr(args, k)]
    if int8_only and not args.quantize:
        raise DudaError(f"{', '.join(int8_only)}: only with --quantize int8")
    if Path(args.out).is_dir():
        raise DudaError(f"--out {args.out}: is a folder, expected a file name ending in .onnx")
    if Path(args.checkpoint).suffix == ".onnx":
        raise DudaError(f"{args.checkpoint}: already an ONNX file; export from a checkpoint or deploy folder")
    loaded = load_model(args.checkpoint, which=args.which).loaded  # the loader of duda.load_model
    height, width = default_size(loaded.resize)
    height, width = args.height or height, args.width or width
    if args.quantize == "int8":
        return run_int8_export(args, loaded, height, width)
    images = list_images(args.check_images)[: args.max_check_images] if args.check_images else []
    result = export_onnx(
        loaded, args.out, height, width, dynamic=args.dynamic, check_images=images,
        min_agreement=0.999 if args.min_agreement is None else args.min_agreement, opset=args.opset,
    )  # fmt: skip
    shape = "dynamic B×3×H×W" if args.dynamic else f"1×3×{height}×{width}"
    print(f"exported {loaded.model_name} ({shape}, opset {args.opset}) to {result.path}")
    print(f"  file size {result.size_bytes / 1e6:.1f} MB")
    print(f"  random inputs: {result.random.summary()}")
    if result.images is not None:
        print(f"  images:        {result.images.summary()}")
    return 0
