"""``duda pretrain``: encoder weights from the procedural stand-in for ImageNet (``duda.pretrain``)."""

from __future__ import annotations

import argparse
import json

from duda.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain an encoder on procedural shape images (ImageNet stand-in)",
        description=(
            "Train MODEL's encoder to segment generic procedural shapes (not street scenes) and write "
            "its weights in the nvidia/mit-b* layout, loadable with model.pretrained: FILE. "
            "--demo writes the built-in benchmark's encoders (the files shipped in the package)."
        ),
    )
    p.add_argument("--model", help="model name (see `duda models`)")
    p.add_argument(
        "--arch",
        default="{}",
        help="architecture overrides as JSON, e.g. '{\"embed_dims\": [8, 16, 32, 64]}'",
    )
    p.add_argument("--out", help="output .safetensors file (a .json record is written beside it)")
    p.add_argument("--demo", action="store_true", help="write every encoder of the built-in benchmark")
    p.add_argument("--out-dir", default=None, help="with --demo: output folder (default: the package's)")
    p.add_argument("--keys", nargs="*", default=None, help="with --demo: only these encoders")
    p.add_argument("--iters", type=int, default=None, help="training steps (default: the demo's recipe)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--size", type=int, default=None, help="image side in pixels")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--workers", type=int, default=1, help="image-drawing loader processes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from pathlib import Path

    from duda.demo.pretrained import DEMO_ENCODERS, demo_pretrain_config, shipped_dir
    from duda.pretrain import PretrainConfig, pretrain_encoder

    tweaks = {
        k: v
        for k, v in {
            "iters": args.iters,
            "batch_size": args.batch_size,
            "size": args.size,
            "lr": args.lr,
        }.items()
        if v is not None
    }
    common = {"seed": args.seed, "threads": args.threads, "workers": args.workers, **tweaks}
    if args.demo:
        out_dir = Path(args.out_dir) if args.out_dir else shipped_dir()
        for key in args.keys or DEMO_ENCODERS:
            cfg = demo_pretrain_config(key, **common)
            pretrain_encoder(cfg, out_dir / f"{key}.safetensors", half=True)
        return 0
    if not args.model or not args.out:
        raise ConfigError("pretrain: give --model and --out (or --demo)")
    try:
        arch = json.loads(args.arch)
    except ValueError as exc:
        raise ConfigError(f"pretrain --arch {args.arch!r}: not JSON ({exc})") from None
    if not isinstance(arch, dict):
        raise ConfigError(f"pretrain --arch {args.arch!r}: expected a JSON object of architecture fields")
    pretrain_encoder(PretrainConfig(args.model, arch, **common), args.out)
    return 0
