"""`duda train CONFIG`: train a method (source_only, daformer, mic, duda) from a YAML config."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (single process, or under torchrun for DDP)",
        description=(
            "Train from CONFIG (see configs/). Checkpoints go to WORK_DIR/checkpoints, metrics to "
            "WORK_DIR/metrics.jsonl and TensorBoard (WORK_DIR/tb), the final small model to "
            "WORK_DIR/model. Multi-GPU: torchrun --nproc_per_node N -m duda train CONFIG."
        ),
    )
    p.add_argument("config", help="YAML experiment config")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.iters=1000 (repeatable; VALUE is YAML)",
    )
    p.add_argument("--work-dir", help="output folder (overrides work_dir in the config)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in the work dir"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from duda.config import load_config
    from duda.engine.trainer import train

    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"work_dir={args.work_dir}")
    cfg = load_config(args.config, overrides)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    if result.metrics:
        for name, r in result.metrics.items():
            print(f"{name}: mIoU {100 * r['miou']:.2f}")
    return 0
