"""The demo's report: a table (Markdown), a per-class bar chart, training curves and a sheet of
predictions of every model on the same target images."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from duda.checkpoints import load_checkpoint
from duda.data.datasets import build_dataset, build_dataset_from_config
from duda.data.loader import EvalSet, build_eval_loader
from duda.engine.logger import read_metrics
from duda.evaluation.inconsistency_report import inconsistency_report, plot_report
from duda.evaluation.visualize import make_grid, save_png
from duda.inference import load_inference_model
from duda.inference.image import colorize
from duda.inference.modes import infer_whole
from duda.methods import config_from_dict
from duda.models import build_model
from duda.models.factory import count_flops

RARE = ("person", "rider", "train", "motorcycle", "bicycle", "traffic light", "traffic sign", "pole")


def model_stats(
    model_name: str, arch: dict, size: tuple[int, int], num_classes: int = 19, reps: int = 5
) -> dict:
    """Parameters, GFLOPs of one forward at ``size`` and CPU latency (batch 1, fp32, median)."""

    model = build_model(model_name, num_classes, **arch).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops": count_flops(model_name, size, num_classes=num_classes, **arch) / 1e9,
        "cpu_ms": 1000 * statistics.median(times),
    }


def load_network(row: dict, seed_index: int = 0):

    work = Path(row["work_dirs"][seed_index])
    if row["network"] == "student":
        return load_inference_model(work / "model")
    return load_inference_model(work, which=row["network"])


def gap_summary(rows: list[dict]) -> dict:
    by_run = {(r["run"], r["network"]): r for r in rows}
    src = by_run.get(("source_only", "student"))
    oracle = by_run.get(("oracle", "student"))
    daf_s = by_run.get(("daformer", "student"))
    duda = by_run.get(("duda", "student"))
    large = by_run.get(("duda", "large")) or by_run.get(("daformer_large", "student"))
    out = {}
    if src and oracle:
        out["domain_gap"] = oracle["miou"] - src["miou"]
        out["source_only_share_of_oracle"] = src["miou"] / oracle["miou"] if oracle["miou"] else None
    if daf_s and large:
        out["large_minus_small"] = large["miou"] - daf_s["miou"]
        # the premise holds only if the mean ± std ranges of the two do not overlap
        out["ranges_apart"] = large["miou"] - large["miou_std"] > daf_s["miou"] + daf_s["miou_std"]
    if daf_s and duda and large:
        span = large["miou"] - daf_s["miou"]
        out["duda_minus_daformer_small"] = duda["miou"] - daf_s["miou"]
        out["duda_position"] = (duda["miou"] - daf_s["miou"]) / span if span > 0 else None
    return out


def markdown_table(rows: list[dict], stats: dict[str, dict], domain: str, command: str) -> str:
    rare = [c for c in RARE if any(r["per_class"].get(c) is not None for r in rows)]
    head = ["model", "iters", "params (M)", "GFLOPs", "CPU ms", "mIoU"] + rare
    lines = [
        f"Built-in benchmark, game → {domain}; mIoU (%) on the {domain} val split, "
        f"mean ± std over {rows[0]['seeds']} seed(s). Reproduce: `{command}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in rows:
        s = stats[r["name"]]
        miou = f"{r['miou']:.1f}" + (f" ± {r['miou_std']:.1f}" if r["seeds"] > 1 else "")
        cells = [
            r["name"],
            str(r["iters"]),
            f"{s['params_m']:.2f}",
            f"{s['gflops']:.2f}",
            f"{s['cpu_ms']:.0f}",
            miou,
        ]
        cells += ["–" if r["per_class"].get(c) is None else f"{r['per_class'][c]:.1f}" for c in rare]
        lines.append("| " + " | ".join(cells) + " |")
    g = gap_summary(rows)
    lines.append("")
    if "domain_gap" in g:
        lines.append(
            f"Domain gap (oracle − source-only): {g['domain_gap']:.1f} mIoU points; source-only reaches "
            f"{100 * g['source_only_share_of_oracle']:.0f}% of the oracle."
        )
    if "large_minus_small" in g:
        apart = "apart" if g["ranges_apart"] else "overlapping"
        lines.append(
            f"DAFormer large − DAFormer small: {g['large_minus_small']:+.1f} mIoU points "
            f"(mean ± std ranges {apart})."
        )
    if "duda_minus_daformer_small" in g:
        pos = g["duda_position"]
        if pos is None:
            where = " (the large reference is not above DAFormer-small here)"
        elif pos > 1:
            where = " (above the large reference)"
        else:
            where = f" ({100 * pos:.0f}% of the way from DAFormer-small to DAFormer-large)"
        lines.append(
            f"DUDA small − DAFormer small: {g['duda_minus_daformer_small']:+.1f} mIoU points{where}."
        )
    return "\n".join(lines) + "\n"


def per_class_chart(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(rows[0]["per_class"])
    x = np.arange(len(classes))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(14, 4.5))
    for i, r in enumerate(rows):
        vals = [np.nan if r["per_class"][c] is None else r["per_class"][c] for c in classes]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, vals, width, label=f"{r['name']} ({r['miou']:.1f})")
    ax.set_xticks(x, classes, rotation=60, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("Per-class IoU on the target val split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_curves(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for r in rows:
        runs.setdefault(r["run"], Path(r["work_dirs"][0]))
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), squeeze=False)
    for ax, (run, work) in zip(axes[0], runs.items(), strict=True):
        recs = {}
        for rec in read_metrics(work / "metrics.jsonl"):
            if rec.get("split") == "train":
                recs[rec["step"]] = rec  # the last record of a step wins (after a resume)
        steps = sorted(recs)
        seen = set().union(*(recs[s].keys() for s in steps)) if steps else set()
        keys = [k for k in ("src", "mix", "mic", "small_src", "small_mix", "small_mic") if k in seen]
        for k in keys:
            ax.plot(steps, [recs[s].get(k, np.nan) for s in steps], label=k)
        ax.set_title(run)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def prediction_sheet(rows: list[dict], val_root: Path, path: Path, n_images: int = 4) -> Path:
    """Rows: target images; columns: image, ground truth, each model's prediction."""

    dataset = build_dataset("cityscapes", val_root, "val")
    eval_set = EvalSet(dataset)
    models = [(r["name"], load_network(r)) for r in rows]
    palette = models[0][1].palette
    grid, titles = [], []
    step = max(1, len(eval_set) // n_images)
    for i in range(0, min(len(eval_set), step * n_images), step):
        sample = eval_set[i]
        img = dataset.load_image(i)
        gt = sample["gt"].numpy().astype(np.uint8)
        row, trow = [img, colorize(gt, palette)], ["target image", "ground truth"]
        for name, loaded in models:
            with torch.no_grad():
                pred = infer_whole(loaded.model, sample["img"].unsqueeze(0), out_hw=gt.shape).argmax(1)[0]
            row.append(colorize(pred.numpy().astype(np.uint8), palette))
            trow.append(name)
        grid.append(row)
        titles.append(trow)
    save_png(path, make_grid(grid, titles, title_height=20))
    return path


def write_report(rows: list[dict], out: Path, val_root: Path, domain: str, command: str, eval_size) -> str:
    out.mkdir(parents=True, exist_ok=True)
    stats = {r["name"]: model_stats(r["model_name"], r["arch"], eval_size) for r in rows}
    table = markdown_table(rows, stats, domain, command)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(
        json.dumps({"rows": rows, "stats": stats, **gap_summary(rows)}, indent=2)
    )
    per_class_chart(rows, out / "per_class.png")
    training_curves(rows, out / "curves.png")
    prediction_sheet(rows, val_root, out / "predictions.png")
    extra = []
    if figure_4a(rows, out / "fig4a_inconsistency.png"):
        extra.append(
            f"Fig. 4a: `{out / 'fig4a_inconsistency.png'}` (I'_c after pre-adaptation vs. the true gap)"
        )
    if figure_4b(rows, out / "fig4b_inconsistency_gain.png"):
        extra.append(
            f"Fig. 4b: `{out / 'fig4b_inconsistency_gain.png'}` (per-class IoU with − without weights)"
        )
    if extra:
        table += "\n" + "\n".join(extra) + "\n"
        (out / "results.md").write_text(table)
    return table


def figure_4a(rows: list[dict], path: Path) -> Path | None:
    """The paper's Fig. 4a on seed 0's DUDA run: I'_c between T and S at the end of stage 1 (the
    weights stage 2 starts from) beside their true per-class IoU gap on the labelled val split."""

    duda = next((r for r in rows if r["run"] == "duda" and r["network"] == "student"), None)
    if duda is None:
        return None
    work = Path(duda["work_dirs"][0])
    latest = sorted((work / "checkpoints").glob("iter_*.pt"))
    if not latest:
        return None
    cfg = config_from_dict(load_checkpoint(latest[-1])["config"])
    ckpt = work / "checkpoints" / f"iter_{cfg.method.duda.stage1_iters:07d}.pt"
    if not ckpt.is_file() or cfg.data.val is None:
        return None
    large = load_inference_model(ckpt, which="teacher")
    small = load_inference_model(ckpt, which="student")
    dataset = build_dataset_from_config(cfg.data.val)
    loader = build_eval_loader(
        EvalSet(dataset, resize=cfg.data.val.resize or dataset.default_resize), workers=0
    )
    report = inconsistency_report(large.model, small.model, loader, large.classes)
    (path.parent / "fig4a_inconsistency.json").write_text(json.dumps(report.to_dict(), indent=2))
    return plot_report(report, path, title="After pre-adaptation: I'_c (T vs. S) and the true IoU gap")


def figure_4b(rows: list[dict], path: Path) -> Path | None:
    """The paper's Fig. 4b: the small model's per-class IoU with minus without the inconsistency
    weights in stage 2 (per-class IoU averaged over seeds)."""
    with_w = next((r for r in rows if r["run"] == "duda" and r["network"] == "student"), None)
    without = next((r for r in rows if r["run"] == "duda_no_inconsistency"), None)
    if with_w is None or without is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [
        c for c in with_w["per_class"] if None not in (with_w["per_class"][c], without["per_class"][c])
    ]
    delta = [with_w["per_class"][c] - without["per_class"][c] for c in classes]
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.bar(np.arange(len(classes)), delta, color=["tab:green" if d >= 0 else "tab:red" for d in delta])
    ax.set_xticks(np.arange(len(classes)), classes, rotation=60, ha="right")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("IoU change (points)")
    diff = with_w["miou"] - without["miou"]
    ax.set_title(
        f"Small model: with − without inconsistency weights (mIoU {diff:+.1f}, {with_w['seeds']} seed(s))"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
