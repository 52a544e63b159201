"""`duda convert`: a published DAFormer / MIC (mmseg) checkpoint -> this project's deploy folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a published DAFormer/MIC (mmseg) latest.pth into a deploy folder",
        description=(
            "Read an mmseg checkpoint (latest.pth of DAFormer or MIC: a state_dict with model.*, "
            "ema_model.*, imnet_model.* networks, or a single segmentor's backbone.*/decode_head.*) "
            "with torch.load(weights_only=True), recognise the architecture from its keys and shapes "
            "(MiT-B0..B5 from the stage widths and block counts, DAFormer vs SegFormer head from the key "
            "names, classes from the classifier) and write model.safetensors + model.json, which "
            "`duda eval`, `duda predict`, `duda export` and DUDA's method.duda.teachers accept. Class "
            "names and palette come from the checkpoint's meta (CLASSES, PALETTE) when usable, else the "
            "Cityscapes 19 classes are assumed (printed as a note). HRDA / MIC(HRDA) checkpoints become an "
            "HRDA model (multi-resolution settings from the checkpoint's config text, else the published "
            "ones)."
        ),
    )
    p.add_argument("checkpoint", metavar="CKPT", help="mmseg checkpoint (latest.pth) or a folder holding one")
    p.add_argument("--out", required=True, metavar="DIR", help="deploy folder to write")
    p.add_argument(
        "--network",
        default="model",
        choices=("model", "ema_model", "imnet_model", "student", "teacher"),
        help="which network: model (default; the one the reference evaluates, also 'student') or "
        "ema_model (its EMA teacher, also 'teacher')",
    )
    p.add_argument(
        "--model-name",
        default=None,
        metavar="NAME",
        help="our model name to map onto (e.g. daformer_mitb5); default: recognised from the weights",
    )
    p.add_argument(
        "--resize",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        default=None,
        help="test scale (W H, keep-ratio) stored for `duda predict` (default: the reference's "
        "Cityscapes test scale, 1024 512; 2048 1024 for HRDA)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.errors import DudaError
    from duda.inference.formats.mmseg import convert_reference_checkpoint

    resize = tuple(args.resize) if args.resize else "reference"  # the recognised model's (HRDA: 2048 1024)
    if args.resize and min(resize) <= 0:
        raise DudaError(f"--resize must be two positive integers, got {args.resize}")
    result = convert_reference_checkpoint(
        args.checkpoint, args.out, network=args.network, model_name=args.model_name, resize=resize
    )
    arch = result.arch
    print(f"{args.checkpoint} [{result.network}]: {arch.backbone} + {arch.head}, {arch.num_classes} classes")
    print(
        f"  as {arch.name}{' ' + str(arch.overrides) if arch.overrides else ''}: {result.params:,} parameters"
    )
    for note in result.notes:
        print(f"  note: {note}")
    print(f"wrote {result.out_dir / 'model.safetensors'} and {result.out_dir / 'model.json'}")
    return 0
