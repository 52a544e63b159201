"""`duda demo`: DUDA end to end on the built-in procedural benchmark, on a CPU."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate the built-in benchmark, train source-only / DAFormer / DUDA / oracle, report",
        description=(
            "Generates the procedural street-scene benchmark (cached in --data), then trains and "
            "evaluates on the target domain: source-only small model, DAFormer small, DUDA large->small "
            "(whose stage-1 teacher is the DAFormer-large reference) and a small model trained on "
            "target labels (oracle). Uses the normal trainer and the configs in configs/synth/. Ends "
            "with a table and writes a report folder (Markdown table, per-class chart, training "
            "curves, prediction sheet). Finished runs in --out are reused."
        ),
    )
    p.add_argument(
        "--quick", action="store_true", help="a smoke run of a few minutes (tiny data, few iterations)"
    )
    p.add_argument("--domain", choices=("real", "night", "fog"), default="real", help="target domain")
    p.add_argument(
        "--seeds", type=int, default=1, help="train each run with seeds 0..N-1 and report mean ± std"
    )
    p.add_argument(
        "--only-seeds",
        default=None,
        help="train and report only these of the seeds, e.g. 1,2 (to run seeds in parallel processes)",
    )
    p.add_argument(
        "--only-runs", default=None, help="train and report only these runs, e.g. source_only,daformer"
    )
    p.add_argument("--out", default=None, help="run and report folder (default: runs/demo[_quick]_<domain>)")
    p.add_argument("--data", default=None, help="benchmark data folder (default: data/synth[_quick])")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at once, each in its own process with one compute thread (default: one per "
        "CPU core, 1 on a GPU or with --quick); results do not depend on it",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="calibration set: source-only, DAFormer small, DAFormer large (alone), oracle; no DUDA",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    import time
    from pathlib import Path

    from duda.demo.report import write_report
    from duda.demo.runs import BASELINES, DEFAULT, DEMO, QUICK, aggregate, default_jobs, run_demo
    from duda.errors import ConfigError

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    tag = "_quick" if args.quick else ""
    out = Path(args.out or f"runs/demo{tag}_{args.domain}")
    data = Path(args.data or f"data/synth{tag}")
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    results = run_demo(
        out,
        data,
        args.domain,
        quick=args.quick,
        seeds=args.seeds,
        only_seeds=_seed_list(args.only_seeds, args.seeds),
        progress=not args.no_progress,
        variants=_variants(BASELINES if args.baselines else DEMO, args.only_runs),
        timing=timing,
        # --quick runs last seconds: starting a process per run would cost more than it saves
        jobs=(1 if args.quick else default_jobs()) if args.jobs is None else args.jobs,
    )
    rows = aggregate(results)
    scale = QUICK if args.quick else DEFAULT
    flags = (" --quick" if args.quick else "") + (" --baselines" if args.baselines else "")
    command = f"duda demo{flags} --domain {args.domain} --seeds {args.seeds}"
    t_report = time.perf_counter()
    table = write_report(rows, out / "report", data / args.domain, args.domain, command, scale.size)
    timing["report"] = time.perf_counter() - t_report
    print()
    print(table)
    print(f"report: {out / 'report'} (results.md, per_class.png, curves.png, predictions.png)")
    total = time.perf_counter() - t0
    print(
        f"where the time went ({total / 60:.1f} min in all; runs finished earlier count ~0; runs "
        "trained at once overlap):"
    )
    for phase, seconds in timing.items():
        print(f"  {phase:<28} {seconds / 60:5.1f} min")
    return 0


def _seed_list(text: str | None, seeds: int) -> list[int] | None:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.errors import ConfigError

    if text is None:
        return None
    try:
        chosen = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise ConfigError(f"--only-seeds {text!r}: expected comma-separated integers, e.g. 1,2") from None
    if not chosen or chosen[0] < 0 or chosen[-1] >= seeds:
        raise ConfigError(f"--only-seeds {text!r}: expected seeds in 0..{seeds - 1} (--seeds {seeds})")
    return chosen


def _variants(variants, text: str | None):
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.errors import ConfigError

    if text is None:
        return variants
    keys = [k.strip() for k in text.split(",") if k.strip()]
    known = [v.key for v in variants]
    unknown = [k for k in keys if k not in known]
    if unknown or not keys:
        raise ConfigError(f"--only-runs {text!r}: expected some of {', '.join(known)}")
    return tuple(v for v in variants if v.key in keys)
