"""`duda predict`: label maps, colour maps and overlays for images of any size."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# = duda.inference.image.MAX_WHOLE_PIXELS and duda.inference.options.DEFAULT_CROP / DEFAULT_STRIDE
# (not imported: `duda --help` must not load torch; tests/evaluation/test_predict.py compares)
MAX_WHOLE_PIXELS = 4096 * 2048
DEFAULT_CROP = (512, 512)
DEFAULT_STRIDE = (341, 341)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict label maps for an image or a folder of images",
        description=(
            "Predict each image with a trained model and write <stem>_trainIds.png (uint8 trainIds, "
            "the format ACDC/Dark Zurich submissions use), <stem>_color.png and <stem>_overlay.png. "
            "Images are resized (keeping the aspect ratio) to the model's test scale and the "
            "prediction is upsampled back to the original size. Sub-folders of an input folder are "
            "mirrored in the output folder."
        ),
    )
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="deploy folder (model.json + model.safetensors), training checkpoint .pt, run folder or .onnx",
    )
    parser.add_argument(
        "input", metavar="IMAGE_OR_DIR", help="an image file or a folder searched recursively"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--which",
        default="student",
        help="network of a training checkpoint to use: student (default), teacher, large, ...",
    )
    _add_inference_arguments(parser)
    parser.add_argument("--alpha", type=float, default=0.5, help="colour weight of the overlay (0..1)")
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda:0, ..."
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first image that cannot be read (default: predict every readable image, "
        "list the failures at the end and exit with status 1)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_WHOLE_PIXELS,
        metavar="N",
        help="whole-mode network inputs above N pixels (after the test-scale resize; e.g. with "
        f"--no-resize) are predicted with sliding windows of --crop/--stride (default {MAX_WHOLE_PIXELS})",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (drawn only on a terminal)"
    )
    parser.epilog = (
        "Memory: the network sees each image at the model's test scale (or --scale); the label map is "
        "upsampled to the original size one class at a time (about 15 bytes per pixel: 0.7 GB beyond the "
        "model for an 8000x6000 photo), and inputs above --max-pixels are predicted window by window. "
        "Exit status: 0 all images predicted; 1 some images could not be read (listed); 2 an error."
    )
    parser.set_defaults(func=run_predict)


def _add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """--mode, --crop, --stride, --scale, --no-resize, --flip, --bf16."""
    parser.add_argument(
        "--mode", choices=("whole", "slide"), default="whole", help="whole-image or sliding-window inference"
    )
    parser.add_argument(
        "--crop", type=int, nargs=2, default=DEFAULT_CROP, metavar=("H", "W"), help="sliding-window size"
    )
    parser.add_argument(
        "--stride", type=int, nargs=2, default=DEFAULT_STRIDE, metavar=("H", "W"), help="sliding-window step"
    )
    parser.add_argument(
        "--scale",
        type=int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="keep-ratio test scale overriding the model's own (e.g. 1024 512)",
    )
    parser.add_argument(
        "--no-resize", action="store_true", help="predict at the original image size (no test-scale resize)"
    )
    parser.add_argument(
        "--flip", action="store_true", help="average with the horizontally mirrored prediction"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast (fast on GPUs; very slow on most CPUs)"
    )


def run_predict(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    import torch
    from torch import nn

    from duda.api import load_model
    from duda.errors import DudaError
    from duda.evaluation.predict import PredictReport, list_images, predict_images
    from duda.files import check_writable_dir
    from duda.inference.device import resolve_device

    if not 0.0 <= args.alpha <= 1.0:
        raise DudaError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if min(args.crop) < 1 or min(args.stride) < 1:
        raise DudaError(f"--crop and --stride must be positive, got {args.crop} and {args.stride}")
    if args.max_pixels < 1:
        raise DudaError(f"--max-pixels must be positive, got {args.max_pixels}")
    if Path(args.out).is_file():
        raise DudaError(f"--out {args.out}: is a file, expected a folder for the outputs")
    device = resolve_device(args.device, what="--device")
    # the same loader and per-image prediction (predict_label) as duda.load_model(...).predict
    seg = load_model(args.checkpoint, which=args.which)
    if isinstance(seg.model, nn.Module):
        seg.to(device)
    else:
        device = torch.device("cpu")  # an ONNX session takes and returns numpy arrays on the host
    loaded, model = seg.loaded, seg.model
    resize = None if args.no_resize else (tuple(args.scale) if args.scale else loaded.resize)
    paths = list_images(args.input)
    root = Path(args.input) if Path(args.input).is_dir() else None
    out = check_writable_dir(args.out, "--out")
    report = PredictReport()
    predict_images(
        model, paths, out, loaded.palette, loaded.mean, loaded.std, resize=resize, mode=args.mode,
        crop=tuple(args.crop), stride=tuple(args.stride), overlay_alpha=args.alpha, flip=args.flip,
        bf16=args.bf16, device=device, root=root, progress=not args.no_progress, strict=args.strict,
        report=report, max_whole_pixels=args.max_pixels,
    )  # fmt: skip
    n = len(report.written)
    print(f"wrote {3 * n} files for {n} images to {out.absolute()}")
    if report.windowed:
        print(
            f"note: {report.windowed} image(s) above --max-pixels {args.max_pixels} were predicted with "
            f"sliding windows of {args.crop[0]}x{args.crop[1]}"
        )
    if report.failed:
        print(f"{len(report.failed)} of {len(paths)} images could not be predicted:", file=sys.stderr)
        for failure in report.failed:
            print(f"  {failure.error}", file=sys.stderr)
        return 1
    return 0
