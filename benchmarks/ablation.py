"""DUDA ablation on the built-in benchmark: what each piece adds to the small student.

Rows (every small model trains the same number of iterations N as in configs/synth):
  source-only S; DAFormer on S alone; [--stage1-rows: + large teacher (stage 1 only, lambda = 1);
  + gradual ramp (stage 1 only)]; DUDA as in the paper; DUDA (project defaults) and DUDA
  without each of its stage-2 pieces (soft KD, lr restart, inconsistency weights); + multi-teacher
  (T fused with a large model trained by MIC). L, T and the MIC large model are given for
  reference. The stage-2 rows start from the paper DUDA's stage-1 checkpoint of their seed, so
  every pair of rows is compared on the same stage 1 (PAIRS: a table of per-seed differences).
Runs shared with `duda demo` (same folders, same seeds) are reused, not retrained.

    python benchmarks/ablation.py [--seeds 1] [--domain real] [--out runs/demo_real] [--jobs 2]

The tables replace the text between the markers TABLE_BEGIN and TABLE_END of --doc
(docs/ablation.md), so the prose around them stays.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from duda.config import load_config
from duda.demo.report import markdown_table, model_stats
from duda.demo.runs import (
    DEFAULT,
    DEMO,
    NO_INCONSISTENCY,
    Variant,
    aggregate,
    arch_text,
    configs_dir,
    run_demo,
)


def variants(stage1_rows: bool = False) -> tuple[Variant, ...]:
    """The ablation rows. DUDA's project defaults differ from the paper's DUDA in stage 2 only
    (soft KD in stage 2, the stage-2 lr restart: docs/method.md section 7), so every DUDA row
    starts from the stage-1 checkpoint of the paper's DUDA run of the same seed, which is
    bit-identical to training it from scratch (tests/engine/test_trainer.py)."""
    base = load_config(str(configs_dir() / "duda.yaml"))
    n = base.train.iters
    large = base.method.duda.large
    arch = arch_text(large.arch)
    by_key = {v.key: v for v in DEMO}
    stage1 = (
        Variant(
            "abl_teacher",
            "duda",
            (("student", "+ large teacher (stage 1 only, λ = 1)"),),
            (f"method.duda.stage1_iters={n}", "method.duda.distill=constant"),
        ),
        Variant(
            "abl_ramp",
            "duda",
            (("student", "+ gradual ramp (stage 1 only)"),),
            (f"method.duda.stage1_iters={n}",),
        ),
    )
    return (
        by_key["source_only"],
        by_key["daformer"],
        *(stage1 if stage1_rows else ()),
        DUDA_PAPER,
        Variant(
            "abl_no_kd",
            "duda",
            (("student", "DUDA without soft KD (lr restart only)"),),
            ("method.duda.kd_weight=0.0",),
            start_from="duda_paper",
            cost=1.5,
        ),
        Variant(
            "abl_no_restart",
            "duda",
            (("student", "DUDA without the stage-2 lr restart (soft KD only)"),),
            ("method.duda.stage2_lr_restart=0.0",),
            start_from="duda_paper",
            cost=1.5,
        ),
        Variant(
            NO_INCONSISTENCY.key,
            NO_INCONSISTENCY.config,
            (("student", "DUDA without inconsistency weights"),),
            NO_INCONSISTENCY.overrides,
            start_from="duda_paper",
            cost=1.5,
        ),
        Variant(
            "duda",
            "duda",
            (("student", "DUDA (project defaults)"),),
            start_from="duda_paper",
            cost=1.5,
        ),
        Variant(
            "mic_large",
            "daformer",
            (("student", "MIC large (extra teacher)"),),
            (
                "method.name=mic",
                f"model.name={large.name}",
                f"model.arch={arch}",
                f"model.pretrained={large.pretrained}",
                f"train.iters={base.method.duda.stage1_iters}",
                "method.uda.mask_block_size=16",
            ),
            cost=5.0,
        ),
        Variant(
            "abl_multi",
            "duda",
            (("student", "DUDA + multi-teacher (T + MIC large)"),),
            ("method.duda.teachers=[{checkpoint: '{seed_dir}/mic_large', network: teacher}]",),
            start_from="duda_paper",  # differs from DUDA in stage 2 only
            cost=1.5,
        ),
    )


#: Stage-2 recipes of the distillation study (issue 19), each a set of overrides of DUDA's
#: stage 2 only: they start from DUDA's own stage-1 checkpoint (bit-identical to a full run).
#: Explored on the development seeds 10-14 only; every round is kept here and in docs/ablation.md.
KD2 = ("method.duda.kd_weight=1.0", "method.duda.kd_stages=stage2")
LR1 = "method.duda.stage2_lr_restart=1.0"
DEV_ROUNDS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "r1": {
        "dev_kd": (
            "+ soft KD on target (w 1, τ 2)",
            ("method.duda.kd_weight=1.0", "method.duda.kd_stages=stage2"),
        ),
        "dev_soft": ("soft mixed targets (fused probabilities)", ("method.duda.stage2_targets=soft",)),
        "dev_lr1": ("stage-2 lr restart ×1.0", ("method.duda.stage2_lr_restart=1.0",)),
        "dev_lr05": ("stage-2 lr restart ×0.5", ("method.duda.stage2_lr_restart=0.5",)),
        "dev_src05": ("stage-2 source weight 0.5", ("method.duda.stage2_source_weight=0.5",)),
        "dev_gamma2": ("γ = 2", ("method.duda.gamma=2.0",)),
    },
    "r2": {  # round 2 (after r1 on seeds 10-11): KD and the lr restart each helped; combine, scale
        "dev_kd_lr1": ("KD (w 1, τ 2) + lr restart ×1", (*KD2, "method.duda.stage2_lr_restart=1.0")),
        "dev_kd3": ("KD w 3, τ 2", ("method.duda.kd_weight=3.0", "method.duda.kd_stages=stage2")),
        "dev_kd_t1": ("KD w 1, τ 1", (*KD2, "method.duda.kd_temperature=1.0")),
        "dev_kd_soft_lr1": (
            "KD + soft targets + lr restart ×1",
            (*KD2, "method.duda.stage2_targets=soft", "method.duda.stage2_lr_restart=1.0"),
        ),
        "dev_kd3_lr1": (
            "KD w 3 + lr restart ×1",
            (
                "method.duda.kd_weight=3.0",
                "method.duda.kd_stages=stage2",
                "method.duda.stage2_lr_restart=1.0",
            ),
        ),
    },
    "r3": {  # round 3 (after r2 on seed 10): τ 1 and the restart each helped; together, and stronger
        "dev_kd_t1_lr1": ("KD w 1, τ 1 + lr restart ×1", (*KD2, "method.duda.kd_temperature=1.0", LR1)),
        "dev_kd3_t1_lr1": (
            "KD w 3, τ 1 + lr restart ×1",
            (
                "method.duda.kd_weight=3.0",
                "method.duda.kd_stages=stage2",
                "method.duda.kd_temperature=1.0",
                LR1,
            ),  # fmt: skip
        ),
        "dev_kd_lr2": ("KD w 1, τ 2 + lr restart ×2", (*KD2, "method.duda.stage2_lr_restart=2.0")),
    },
}
#: Stage-1 rounds: full runs (no shared stage-1 checkpoint)
DEV_FULL_ROUNDS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "s1": {
        "dev_s1kd_lr1": (
            "KD in both stages (stage 1 × λ) + stage-2 lr restart ×1",
            ("method.duda.kd_weight=1.0", "method.duda.kd_stages=both", LR1),
        ),
        "dev_s1soft_kd_lr1": (
            "soft stage-1 targets + KD in both stages + stage-2 lr restart ×1",
            (
                "method.duda.stage1_targets=soft",
                "method.duda.kd_weight=1.0",
                "method.duda.kd_stages=both",
                LR1,
            ),  # fmt: skip
        ),
    },
}


#: DUDA exactly as the paper describes it (hard labels, no KD, one lr schedule over both stages),
#: whatever the project's defaults are
PAPER = (
    "method.duda.kd_weight=0.0",
    "method.duda.stage1_targets=hard",
    "method.duda.stage2_targets=hard",
    "method.duda.stage2_lr_restart=0.0",
)
DUDA_PAPER = Variant(
    "duda_paper",
    "duda",
    (("student", "DUDA as in the paper (small)"), ("large", "large model L (reference)"),
     ("teacher", "EMA teacher T (stage 1)")),
    PAPER,
    cost=7.0,
)  # fmt: skip


#: The DUDA settings the development rounds ran on (the defaults before the study ended): each
#: round's overrides apply on top of them, so a row reruns as it ran whatever today's defaults are
DEV_BASE = (*PAPER, "method.duda.kd_temperature=2.0", "method.duda.kd_stages=both")


#: (what, run with it, run without it): each a per-seed difference of the small student's mIoU,
#: both runs from the same stage-1 checkpoint where they are DUDA runs
PAIRS = (
    ("DUDA (paper) over DAFormer small", "duda_paper", "daformer"),
    ("DUDA (project defaults) over DAFormer small", "duda", "daformer"),
    ("project stage 2 over the paper's (same stage 1)", "duda", "duda_paper"),
    ("soft KD in stage 2", "duda", "abl_no_kd"),
    ("stage-2 lr restart", "duda", "abl_no_restart"),
    ("inconsistency weights", "duda", NO_INCONSISTENCY.key),
    ("multi-teacher (T + MIC large)", "abl_multi", "duda"),
)
TABLE_BEGIN, TABLE_END = "<!-- ablation.py: tables begin -->", "<!-- ablation.py: tables end -->"


def paired_table(results) -> str:
    """Markdown table of PAIRS: per seed, mean, and on how many seeds the difference is > 0."""
    small = {(r.run, r.seed): r.miou for r in results if r.network == "student"}  # in %
    seeds = sorted({r.seed for r in results})
    lines = [
        "| what it adds (small student, mIoU points) | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | seeds > 0 |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for label, with_, without in PAIRS:
        d = {
            s: small[with_, s] - small[without, s]
            for s in seeds
            if (with_, s) in small and (without, s) in small
        }
        if not d:
            continue
        cells = " | ".join(f"{d[s]:+.1f}" if s in d else "–" for s in seeds)
        mean = sum(d.values()) / len(d)
        lines.append(f"| {label} | {cells} | {mean:+.2f} | {sum(v > 0 for v in d.values())}/{len(d)} |")
    return "\n".join(lines) + "\n"


def write_doc(path: Path, tables: str) -> None:
    """Put ``tables`` between the markers of ``path`` (a new file: a title and the tables)."""
    block = f"{TABLE_BEGIN}\n{tables}{TABLE_END}"
    text = path.read_text() if path.is_file() else ""
    if TABLE_BEGIN in text and TABLE_END in text:
        head, rest = text.split(TABLE_BEGIN, 1)
        text = head + block + rest.split(TABLE_END, 1)[1]
    else:
        text = "# DUDA ablation on the built-in benchmark\n\n" + block + "\n"
    path.write_text(text)


def dev_variants(rounds: list[str]) -> tuple[Variant, ...]:
    by_key = {v.key: v for v in DEMO}
    rows = (("student", "DUDA (paper stage 2)"), ("large", "large model L (reference)"),
            ("teacher", "EMA teacher T (stage 1)"))  # fmt: skip
    out = [by_key["daformer"], Variant("duda", "duda", rows, DEV_BASE)]
    for r in rounds:
        full = r in DEV_FULL_ROUNDS
        for key, (label, overrides) in (DEV_FULL_ROUNDS if full else DEV_ROUNDS)[r].items():
            start = None if full else "duda"
            rows = (("student", f"{r}: {label}"),)
            out.append(
                Variant(
                    key, "duda", rows, (*DEV_BASE, *overrides), start_from=start, cost=7.0 if full else 1.5
                )
            )
    return tuple(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--domain", default="real")
    ap.add_argument(
        "--out", default=None, help="run folder (default runs/demo_<domain>, shared with duda demo)"
    )
    ap.add_argument("--data", default="data/synth")
    ap.add_argument(
        "--doc", default=None, help="write the table here (default docs/ablation.md; with --dev: nowhere)"
    )
    ap.add_argument("--only-runs", default=None, help="comma-separated run keys to train and report")
    ap.add_argument("--only-seeds", default=None, help="comma-separated seeds of 0..--seeds-1 (e.g. 10,11)")
    ap.add_argument(
        "--dev",
        default=None,
        help="comma-separated rounds of the stage-2 distillation study (DEV_ROUNDS) instead of the "
        "ablation rows; run them on the development seeds only (--seeds 15 --only-seeds 10,11,12,13,14)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (one per core)")
    ap.add_argument(
        "--stage1-rows",
        action="store_true",
        help="also the two stage-1-only rows (large teacher with λ = 1; gradual ramp): full runs",
    )
    args = ap.parse_args()
    out = Path(args.out or f"runs/demo_{args.domain}")
    t0 = time.perf_counter()
    order = dev_variants(args.dev.split(",")) if args.dev else variants(args.stage1_rows)
    if args.only_runs:
        keep = set(args.only_runs.split(","))
        order = tuple(v for v in order if v.key in keep)
    # runs shared with `duda demo` go last: a demo running beside this script trains them first
    shared = {"source_only", "daformer", "duda", NO_INCONSISTENCY.key}
    # runs that start from DUDA's stage-1 checkpoint need the duda run first
    todo = (
        tuple(v for v in order if v.key in shared and not v.start_from)
        + tuple(v for v in order if v.key not in shared and not v.start_from)
        + tuple(v for v in order if v.start_from)
    )
    only_seeds = [int(x) for x in args.only_seeds.split(",")] if args.only_seeds else None
    results = run_demo(
        out,
        Path(args.data),
        args.domain,
        seeds=args.seeds,
        only_seeds=only_seeds,
        progress=False,
        variants=todo,
        jobs=args.jobs,
    )
    rank = {v.key: i for i, v in enumerate(order)}
    results.sort(key=lambda r: (r.seed, rank[r.run], r.network != "student"))
    rows = aggregate(results)
    stats = {r["name"]: model_stats(r["model_name"], r["arch"], DEFAULT.size) for r in rows}
    command = f"python benchmarks/ablation.py --seeds {args.seeds} --domain {args.domain}"
    if args.only_seeds:
        command += f" --only-seeds {args.only_seeds}"
    if args.dev:
        command += f" --dev {args.dev}"
    table = markdown_table(rows, stats, args.domain, command) + "\n" + paired_table(results)
    print(table)
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min")
    doc = args.doc or (None if args.dev else "docs/ablation.md")
    if doc:
        write_doc(Path(doc), table)


if __name__ == "__main__":
    main()
