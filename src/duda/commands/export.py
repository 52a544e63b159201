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
        "--min-agreement", type=float, default=0.999, help="required argmax agreement, 0..1 (default 0.999)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.set_defaults(func=run_export)


def default_size(resize: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of the export: the test scale (W, H) as landscape, else 512×1024."""
    if not resize:
        return 512, 1024
    return min(resize), max(resize)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from duda.deploy.onnx_export import export_onnx
    from duda.engine.checkpoint import load_inference_model
    from duda.errors import DudaError
    from duda.evaluation.predict import list_images

    if args.format == "hf":
        from duda.models.hf import cli_export

        return cli_export(args)
    if not 0.0 < args.min_agreement <= 1.0:
        raise DudaError(f"--min-agreement must be in (0, 1], got {args.min_agreement}")
    if Path(args.out).is_dir():
        raise DudaError(f"--out {args.out}: is a folder, expected a file name ending in .onnx")
    if Path(args.checkpoint).suffix == ".onnx":
        raise DudaError(f"{args.checkpoint}: already an ONNX file; export from a checkpoint or deploy folder")
    loaded = load_inference_model(args.checkpoint, which=args.which)
    height, width = default_size(loaded.resize)
    height, width = args.height or height, args.width or width
    images = list_images(args.check_images)[: args.max_check_images] if args.check_images else []
    result = export_onnx(
        loaded, args.out, height, width, dynamic=args.dynamic, check_images=images,
        min_agreement=args.min_agreement, opset=args.opset,
    )  # fmt: skip
    shape = "dynamic B×3×H×W" if args.dynamic else f"1×3×{height}×{width}"
    print(f"exported {loaded.model_name} ({shape}, opset {args.opset}) to {result.path}")
    print(f"  file size {result.size_bytes / 1e6:.1f} MB")
    print(f"  random inputs: {result.random.summary()}")
    if result.images is not None:
        print(f"  images:        {result.images.summary()}")
    return 0
