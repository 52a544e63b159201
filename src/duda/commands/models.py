"""``duda models``: list the model names with parameters and GFLOPs."""

from __future__ import annotations

import argparse

# duda's modules are imported in the functions that run the command: ``duda`` imports every
# command module to build its parser; torch and the methods (about 1.4 s; duda.config alone
# 60 ms, 3x all of duda.cli) must not slow ``duda --help`` and the other commands.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list segmentation models with parameter counts and GFLOPs",
        description=(
            "Print every model name accepted by build_model / configs, with its parameter count (M), "
            "the GFLOPs of one forward pass at the given input size (counted with FlopCounterMode on "
            "the meta device, 2 FLOPs per multiply-add), its output stride and the hub id of its "
            "ImageNet backbone weights."
        ),
    )
    parser.add_argument(
        "--names",
        nargs="+",
        metavar="NAME",
        help="only these model names (default: all)",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=(512, 1024),
        metavar=("H", "W"),
        help="input height and width for the FLOP count (default: 512 1024)",
    )
    parser.add_argument("--num-classes", type=int, default=19, help="number of output classes (default: 19)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.models.factory import list_models, model_summary

    names = args.names or list_models()
    height, width = args.size
    print(
        f"{'name':<20} {'params (M)':>10} {'GFLOPs':>9} {'stride':>6}  {'ImageNet weights':<22} description"
    )
    for name in names:
        row = model_summary(name, (height, width), args.num_classes)
        print(
            f"{name:<20} {row['params'] / 1e6:>10.2f} {row['flops'] / 1e9:>9.1f} {row['output_stride']:>6}  "
            f"{row['hub_id'] or '-':<22} {row['description']}"
        )
    print(f"(GFLOPs of one 1x3x{height}x{width} forward)")
    return 0
