"""The paper's Figure 1 on the built-in benchmark: DAFormer vs. DUDA for several student sizes.

For each student size (the shipped pretrained encoders "small", "medium", "wide"; the large model
is the demo's) it trains DAFormer on the student alone and DUDA large -> student, with the demo's
configs and iterations, and plots mIoU against the student's parameter count, with the large
DAFormer model for reference. Runs shared with `duda demo` (same folders and seeds) are reused.

    python benchmarks/figure1.py [--seeds 1] [--domain real] [--out runs/demo_real]

Writes OUT/report/figure1.png and figure1.md, and prints the table and the run time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from duda.demo.pretrained import DEMO_ENCODERS
from duda.demo.report import model_stats
from duda.demo.runs import DEFAULT, DEMO, Variant, aggregate, arch_text, run_demo

SIZES = ("small", "medium", "wide")


def _arch_override(key: str) -> tuple[str, ...]:
    name, arch = DEMO_ENCODERS[key]
    return (f"model.name={name}", f"model.arch={arch_text(arch)}", f"model.pretrained=duda:{key}")


def variants() -> tuple[Variant, ...]:
    by_key = {v.key: v for v in DEMO}
    out = []
    for key in SIZES:
        if key == "small":  # the demo's own runs
            out.append(by_key["daformer"])
            out.append(by_key["duda"])
            continue
        out.append(
            Variant(
                f"fig1_daformer_{key}", "daformer", (("student", f"DAFormer ({key})"),), _arch_override(key)
            )
        )
        out.append(Variant(f"fig1_duda_{key}", "duda", (("student", f"DUDA ({key})"),), _arch_override(key)))
    return tuple(out)


def plot(rows: list[dict], stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, marker in (("DAFormer", "o"), ("DUDA", "s")):
        pts = sorted(
            (stats[r["name"]]["params_m"], r["miou"], r["miou_std"])
            for r in rows
            if r["network"] == "student" and r["name"].startswith(method)
        )
        if pts:
            xs, ys, es = zip(*pts, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker=marker, capsize=3, label=f"{method} (student)")
    large = [r for r in rows if r["network"] == "large"]
    if large:
        r = large[0]
        ax.errorbar(
            [stats[r["name"]]["params_m"]], [r["miou"]], yerr=[r["miou_std"]], marker="*", ms=12,
            color="k", linestyle="none", label="DAFormer large",
        )  # fmt: skip
    ax.set_xscale("log")
    ticks = sorted({s["params_m"] for s in stats.values()})
    ax.set_xticks(ticks, [f"{t:.2f}" for t in ticks])  # the models' own sizes, no crowded minor labels
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Built-in benchmark: student size vs. mIoU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--domain", default="real")
    ap.add_argument(
        "--out", default=None, help="run folder (default runs/demo_<domain>, shared with duda demo)"
    )
    ap.add_argument("--data", default="data/synth")
    ap.add_argument(
        "--only-runs", default=None, help="comma-separated run keys to train (others reused if done)"
    )
    ap.add_argument("--no-report", action="store_true", help="train only (e.g. in parallel processes)")
    args = ap.parse_args()
    out = Path(args.out or f"runs/demo_{args.domain}")
    t0 = time.perf_counter()
    chosen = variants()
    if args.only_runs:
        keep = set(args.only_runs.split(","))
        chosen = tuple(v for v in chosen if v.key in keep)
    results = run_demo(out, Path(args.data), args.domain, seeds=args.seeds, progress=False, variants=chosen)
    if args.no_report:
        return
    rows = aggregate(results)
    stats = {r["name"]: model_stats(r["model_name"], r["arch"], DEFAULT.size) for r in rows}
    lines = [
        f"Figure 1 on the built-in benchmark (game → {args.domain}), mIoU (%), "
        f"mean ± std over {args.seeds} seed(s).",
        f"Reproduce: `python benchmarks/figure1.py --seeds {args.seeds} --domain {args.domain}`",
        "",
        "| model | params (M) | mIoU |",
        "|---|---|---|",
    ]
    for r in rows:
        std = f" ± {r['miou_std']:.1f}" if r["seeds"] > 1 else ""
        lines.append(f"| {r['name']} | {stats[r['name']]['params_m']:.2f} | {r['miou']:.1f}{std} |")
    minutes = (time.perf_counter() - t0) / 60
    lines += ["", f"Run time: {minutes:.1f} min (runs reused from earlier count ~0)."]
    table = "\n".join(lines) + "\n"
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    (report / "figure1.md").write_text(table)
    plot(rows, stats, report / "figure1.png")
    print(table)
    print(f"wrote {report / 'figure1.png'}")


if __name__ == "__main__":
    main()
