"""`duda train CONFIG`: train a method (source_only, daformer, mic, duda) from a YAML config."""

from __future__ import annotations

import argparse
import signal
import sys

from duda.commands import add_overrides_argument

# duda's modules are imported in the functions that run the command: ``duda`` imports every
# command module to build its parser; torch and the methods (about 1.4 s; duda.config alone
# 60 ms, 3x all of duda.cli) must not slow ``duda --help`` and the other commands.


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
    add_overrides_argument(p)
    p.add_argument("--work-dir", help="output folder (overrides work_dir in the config)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest readable checkpoint in the work dir (a truncated newest one "
        "is set aside and the one before it used); refused if it belongs to another model or method",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="the work dir holds a finished or stopped run: move it aside to WORK_DIR.replaced-<time> "
        "and start afresh (without --resume or --overwrite such a work dir is refused)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (bars are drawn only on a terminal)"
    )
    p.epilog = (
        "Exit status: 0 finished; 2 an error (one line naming the file, key or value); 128+N stopped by "
        "signal N after writing a checkpoint (143 SIGTERM, 130 Ctrl-C): continue with --resume."
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.engine.trainer import train
    from duda.methods import load_config

    cfg = load_config(args.config, list(args.overrides))
    if args.work_dir:
        cfg.work_dir = args.work_dir  # a path, taken as written (not parsed as YAML)
    result = train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if result.stopped_early and result.signal:
        name = signal.Signals(result.signal).name
        print(
            f"duda train: stopped by {name} (exit {128 + result.signal}); checkpoint {result.checkpoint}",
            file=sys.stderr,
        )
        return 128 + result.signal
    if result.metrics:
        for name, r in result.metrics.items():
            print(f"{name}: mIoU {100 * r['miou']:.2f}")
    return 0
