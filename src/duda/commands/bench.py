"""`duda bench`: inference, training-step and data-loader benchmarks in one report.

duda's own modules are imported inside the functions that run the command: ``duda`` imports every
command module to build its parser, and ``duda.deploy.bench`` imports torch and the methods
(about 1.4 s), which ``duda --help`` and the other commands must not pay.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

NOTES_MARKER = "<!-- notes: kept when `duda bench` rewrites this file -->"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure inference latency, training-step cost and loader throughput",
        description=(
            "Measure, in one run: batch-1 inference latency, images/s and peak memory of small and large "
            "models in PyTorch fp32 / channels_last / bf16 autocast and onnxruntime fp32 / int8; "
            "training-step time, peak memory and achieved GFLOP/s (against a matrix product of the same "
            "precision) of source-only, DAFormer, MIC and DUDA stages 1 and 2 on random batches; and the "
            "training loader's throughput against a GPU step's demand. Prints a Markdown report and writes "
            "it to --out (text after the notes marker in an existing file is kept)."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny models and sizes: all code paths in seconds"
    )
    parser.add_argument(
        "--out", default=None, metavar="FILE.md", help="write the report here (e.g. docs/performance.md)"
    )
    parser.add_argument(
        "--only", action="append", choices=("inference", "train", "loader"), default=None,
        help="run only this section (repeatable; default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None, help="torch/onnxruntime threads (default: all cores)"
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions per case (default 3; quick 1)"
    )
    _add_inference_arguments(parser)
    _add_train_arguments(parser)
    parser.set_defaults(func=run_bench)


def _add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", nargs="+", default=None, help="inference models (default B0, R18, B5, R101)"
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="inference input (default 512 1024)",
    )
    parser.add_argument(
        "--backends", nargs="+", default=None, help="inference backends (default: all of torch-fp32, "
        "torch-fp32-cl, torch-bf16, onnx, onnx-noopt, onnx-int8)",
    )  # fmt: skip


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--large", default=None, help="large model of the training cases (default daformer_mitb5)"
    )
    parser.add_argument(
        "--small", default=None, help="small model of the DUDA cases (default daformer_mitb0)"
    )
    parser.add_argument(
        "--crop", type=int, nargs=2, default=None, metavar=("H", "W"), help="training crop (default 256 256)"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="source (and target) images per step (default 2)"
    )
    parser.add_argument(
        "--cases", nargs="+", default=None,
        help="training cases: registered methods, DUDA as duda-stage1 / duda-stage2 (default: "
        "source_only daformer mic duda-stage1 duda-stage2; e.g. add hrda mic_hrda)",
    )  # fmt: skip
    parser.add_argument(
        "--bf16-cap", type=float, default=None,
        help="skip a bf16 case whose estimated time exceeds this many seconds (default 60)",
    )  # fmt: skip
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the operator profile of the DAFormer step"
    )


def options_from_args(args: argparse.Namespace):
    """BenchOptions from the defaults (or the quick set) with the given flags applied."""
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.deploy import bench as B
    from duda.deploy.bench_report import BenchOptions, quick_options
    from duda.errors import DudaError
    from duda.models.factory import recipe

    sections = tuple(args.only) if args.only else ("inference", "train", "loader")
    opts = quick_options(sections) if args.quick else BenchOptions(sections=sections)
    opts.threads = args.threads or (opts.threads if args.quick else os.cpu_count() or 1)
    if args.reps is not None:
        if args.reps < 1:
            raise DudaError(f"--reps must be at least 1, got {args.reps}")
        opts.reps = args.reps
    opts.inference_models = args.models or opts.inference_models
    opts.inference_size = tuple(args.size) if args.size else opts.inference_size
    bad = sorted(set(args.backends or []) - set(B.INFERENCE_BACKENDS))
    if bad:
        raise DudaError(f"--backends: unknown {bad}; expected some of {list(B.INFERENCE_BACKENDS)}")
    opts.backends = args.backends or opts.backends
    bad = sorted(set(args.cases or []) - set(B.train_case_names()))
    if bad:
        raise DudaError(f"--cases: unknown {bad}; expected some of {B.train_case_names()}")
    opts.train_cases = args.cases or opts.train_cases
    t = opts.train
    t.large, t.small = args.large or t.large, args.small or t.small
    t.crop = tuple(args.crop) if args.crop else t.crop
    t.batch = args.batch or t.batch
    if args.bf16_cap is not None:
        opts.bf16_cap_s = args.bf16_cap
    if args.no_profile:
        opts.profile_top = 0
    for name in [*opts.inference_models, t.large, t.small]:
        recipe(name)  # ConfigError listing the known names
    return opts


def write_report(path: str, markdown: str) -> None:
    """Write ``markdown`` to ``path``, keeping the hand-written notes after the marker."""
    p = Path(path)
    notes = ""
    if p.is_file():
        old = p.read_text()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) :]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(markdown + ("\n" + notes if notes else "\n" + NOTES_MARKER + "\n"))


def run_bench(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.deploy.bench_report import render_markdown, run_benchmarks

    opts = options_from_args(args)
    report = run_benchmarks(opts, log=lambda s: print(s, flush=True))
    markdown = render_markdown(report)
    print()
    print(markdown)
    if args.out:
        write_report(args.out, markdown)
        print(f"wrote {args.out}")
    return 0
