"""Run the benchmark sections of `duda bench` and render them as one Markdown report."""

from __future__ import annotations

import datetime
import math
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from duda.deploy import bench as B
from duda.log import info
from duda.methods.bench_cases import BenchCase, bench_case, bench_cases

# A GPU-sized training step the loader must keep up with: DAFormer on one RTX 2080 Ti,
# 16 h / 40k iterations (DAFormer paper) = 0.69 it/s, each with 2 source + 2 target images.
GPU_STEP_RATE = 40000 / (16 * 3600)
IMAGES_PER_STEP = 4


@dataclass
class BenchOptions:
    sections: tuple[str, ...] = ("inference", "train", "loader")
    threads: int = 2
    reps: int = 3
    inference_models: list[str] = field(
        default_factory=lambda: ["daformer_mitb0", "deeplabv3p_r18", "daformer_mitb5", "deeplabv2_r101"]
    )
    inference_size: tuple[int, int] = (512, 1024)
    backends: list[str] = field(default_factory=lambda: list(B.INFERENCE_BACKENDS))
    train: B.TrainSetup = field(default_factory=B.TrainSetup)
    train_cases: list[str] = field(default_factory=B.default_train_cases)
    profile_top: int = 12
    bf16_cap_s: float = 60.0
    matmul_n: int = 2048
    matmul_n_bf16: int = 256
    loader_images: int = 6
    loader_batches: int = 10
    loader_workers: int = 2
    loader_crop: int = 512


def quick_options(sections: tuple[str, ...]) -> BenchOptions:
    """Tiny models and sizes: every code path in seconds (for tests and smoke runs)."""
    return BenchOptions(
        sections=sections,
        threads=1,
        reps=1,
        inference_models=["daformer_mit_tiny", "deeplabv3p_r_tiny"],
        inference_size=(64, 128),
        train=B.TrainSetup(large="daformer_mit_tiny", small="segformer_mit_tiny", crop=(64, 64), batch=2),
        profile_top=5,
        bf16_cap_s=30.0,
        matmul_n=512,
        matmul_n_bf16=128,
        loader_images=2,
        loader_batches=2,
        loader_workers=2,
        loader_crop=256,
    )


def run_benchmarks(opts: BenchOptions, log: Callable[[str], None] = info) -> dict[str, Any]:
    """Every requested section, measured now; a dict that :func:`render_markdown` formats."""
    torch.set_num_threads(opts.threads)
    report: dict[str, Any] = {
        "command": " ".join(["duda", *map(shlex.quote, sys.argv[1:])]) if sys.argv else "duda bench",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": B.machine_info(opts.threads),
        "load_before": B.load_average(),
        "options": opts,
    }
    log("reference matrix products ...")
    peak = {
        "fp32": B.matmul_gflops(opts.matmul_n, torch.float32),
        "bf16": B.matmul_gflops(opts.matmul_n_bf16, torch.bfloat16, reps=1),
    }
    report["peak"] = peak
    log(f"  fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.2f} GFLOP/s")
    if "inference" in opts.sections:
        log("inference ...")
        report["inference"] = B.bench_inference(
            opts.inference_models, opts.inference_size, opts.backends, opts.reps, opts.threads,
            peak["bf16"], opts.bf16_cap_s, log,
        )  # fmt: skip
    if "train" in opts.sections:
        log("training steps ...")
        report["train"] = B.bench_train(
            opts.train, opts.train_cases, opts.reps, opts.threads, peak, opts.bf16_cap_s, log=log
        )
        reference = B.reference_case()
        if opts.profile_top > 0 and reference in opts.train_cases:
            log(f"profiling the {bench_case(reference).label} step ...")
            report["profile"] = B.run_isolated(
                B._profile_case, reference, opts.train, opts.threads, opts.profile_top
            )
    if "loader" in opts.sections:
        log("data loader ...")
        report["loader"] = B.bench_loader(
            opts.loader_images, opts.loader_workers, opts.loader_batches, opts.train.batch, opts.loader_crop
        )
        log(f"  {report['loader'].samples_per_s:.2f} samples/s")
    report["load_after"] = B.load_average()
    return report


# --------------------------------------------------------------------------- rendering


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def inference_table(rows: list[B.InferenceRow]) -> str:
    body = []
    fp32 = {r.model: r.latency_s for r in rows if r.backend == "torch-fp32" and r.latency_s}
    for r in rows:
        speedup = fp32.get(r.model) / r.latency_s if r.latency_s and fp32.get(r.model) else None
        body.append([
            r.model, r.backend, f"{r.size[0]}×{r.size[1]}", _fmt(r.gflop, 1), _fmt(r.latency_s, 3),
            _fmt(r.images_per_s, 2), _fmt(speedup, 2) + ("×" if speedup else ""), _fmt(r.peak_mb, 0),
            _fmt(r.delta_mb, 0), r.note,
        ])  # fmt: skip
    return _table(
        ["model", "backend", "input H×W", "GFLOP", "s/image", "images/s", "vs torch-fp32", "peak RSS MB",
         "Δ MB", "note"],
        body,
    )  # fmt: skip


def train_table(rows: list[B.TrainRow], peak: dict[str, float]) -> str:
    body = []
    for r in rows:
        share = 100 * r.gflops / peak[r.precision] if r.gflops else None
        body.append([
            r.case, r.precision, _fmt(r.step_s, 2), _fmt(r.gflop, 1), _fmt(r.gflops, 1),
            _fmt(share, 0) + ("%" if share is not None else ""), _fmt(r.peak_mb, 0), _fmt(r.delta_mb, 0),
            r.note,
        ])  # fmt: skip
    return _table(
        [
            "case",
            "precision",
            "s/step",
            "GFLOP/step",
            "GFLOP/s",
            "% of matmul",
            "peak RSS MB",
            "Δ MB",
            "note",
        ],
        body,
    )


def comparison(case: BenchCase, row: B.TrainRow, ref_case: BenchCase, ref: B.TrainRow) -> str:
    """A case's step against the reference step: against its target time ratio when it declares
    one (time, peak memory, FLOPs), else the time ratio alone."""
    ratio = row.step_s / ref.step_s
    if case.target_ratio is None:
        return f"{case.label} step = {ratio:.2f}× the {ref_case.short_label} step in time."
    verdict = "meets" if ratio <= case.target_ratio else "misses"
    flop_ratio = row.gflop / ref.gflop
    if not 0.5 * flop_ratio <= ratio <= 2 * flop_ratio:
        # more than 2x away from the FLOP ratio: the times are not comparable (contention)
        verdict = f"NOT COMPARABLE (FLOP ratio {flop_ratio:.2f}×: timing noise, re-run); nominally {verdict}"
    return (
        f"{case.label} step / {ref_case.label} step = {ratio:.2f}× in time ({verdict} the "
        f"≤ {case.target_ratio:.2f}× target), {row.peak_mb / ref.peak_mb:.2f}× in peak memory "
        f"(Δ {row.delta_mb:.0f} vs {ref.delta_mb:.0f} MB); FLOPs {flop_ratio:.2f}×."
    )


def train_findings(rows: list[B.TrainRow]) -> list[str]:
    """Sentences computed from the table: the cases that declare a comparison against the
    reference case (e.g. DUDA's stages vs the large model trained alone), frozen-network checks."""
    by = {(r.case, r.precision): r for r in rows}
    cases = bench_cases()
    out = []
    ref_name = B.reference_case()
    ref = by.get((ref_name, "fp32"))
    for case in cases.values():
        row = by.get((case.name, "fp32"))
        if case.compare and ref and row and ref.step_s and row.step_s:
            out.append(comparison(case, row, cases[ref_name], ref))
    for r in rows:
        if r.frozen_ok and r.precision == "fp32":
            out.append(f"{r.case}: {r.frozen_ok}.")
    nets = {r.case: r.networks for r in rows if r.networks}
    out += [f"{case} networks: {n}." for case, n in nets.items()]
    return out


def profile_table(profile: dict) -> str:
    rows = [
        [f"`{o['op']}`", str(o["calls"]), _fmt(o["self_s"], 3), f"{100 * o['share']:.1f}%"]
        for o in profile["ops"]
    ]
    return _table(["operator", "calls", "self CPU s", "share"], rows)


def loader_lines(loader: B.LoaderResult, train_rows: list[B.TrainRow] | None) -> list[str]:
    images_per_s = 2 * loader.samples_per_s  # a sample holds one source and one target image
    gpu_demand = GPU_STEP_RATE * IMAGES_PER_STEP
    lines = [
        f"Training loader (`UDATrainSet` + `build_train_loader`, {loader.workers} workers, "
        f"batch {loader.batch}, {loader.crop}² crops, {loader.images} GTA-size 1914×1052 source and "
        "2048×1024 target PNGs): "
        f"**{loader.samples_per_s:.2f} samples/s = {images_per_s:.2f} images/s**. {loader.note}",
        f"- GPU demand assumed: DAFormer on an RTX 2080 Ti, 16 h / 40k iterations = {GPU_STEP_RATE:.2f} "
        f"it/s × {IMAGES_PER_STEP} images = {gpu_demand:.2f} images/s → loader/demand = "
        f"{images_per_s / gpu_demand:.2f}×"
        f" ({'keeps up' if images_per_s >= gpu_demand else 'would STALL the GPU; raise data.workers'}).",
    ]
    demand_cases = {c.name for c in bench_cases().values() if c.loader_demand}
    for r in train_rows or []:
        if r.precision == "fp32" and r.step_s and r.case in demand_cases:
            demand = 2 * loader.batch / r.step_s  # batch source + batch target images per step
            lines.append(f"- demand of this machine's {r.case} step: {demand:.2f} images/s.")
    return lines


def cases_line() -> str:
    """What each default training case trains (declared by its method), cases that train the same
    listed together: ``a, b and c train ...; d trains ...``."""
    groups: dict[str, list[str]] = {}
    for name in B.default_train_cases():
        groups.setdefault(bench_case(name).trains, []).append(name)
    parts = []
    for trains, names in groups.items():
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        parts.append(f"{listed} {'trains' if len(names) == 1 else 'train'} {trains}")
    return "; ".join(parts)


def _header(report: dict[str, Any]) -> list[str]:
    m, o = report["machine"], report["options"]
    lb, la = report["load_before"], report["load_after"]
    shared = max(lb[0], la[0]) > 0.5 * (m["cores"] or 1)
    return [
        "# Performance",
        "",
        "Generated by `duda bench`; every figure below comes from the one run described here.",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['simd']}), GPU {m['gpu']}; torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, Python {m['python']}; {m['threads']} torch/ORT threads",
        f"- load average before {lb[0]:.2f} / after {la[0]:.2f}"
        + (
            " — **the machine was shared with other work during this run: timings are noisy and pessimistic**"
            if shared
            else ""
        ),  # fmt: skip
        f"- reference matrix product (same run): fp32 {o.matmul_n}³ "
        f"**{report['peak']['fp32']:.1f} GFLOP/s**, "
        f"bf16 {o.matmul_n_bf16}³ **{report['peak']['bf16']:.2f} GFLOP/s**",
        "",
        "Memory: peak RSS is the case's own process peak (`VmHWM`; each case runs in a fresh process); "
        "Δ is that peak minus the process after imports (inference) or after building the networks "
        "(training).",
    ]


def _inference_section(report: dict[str, Any]) -> list[str]:
    o = report["options"]
    return [
        "",
        f"## Inference (batch 1, {o.inference_size[0]}×{o.inference_size[1]}, median of {o.reps})",
        "",
        inference_table(report["inference"]),
        "",
        "Backends: `torch-fp32` eager under `inference_mode`; `torch-fp32-cl` the same in channels_last; "
        "`torch-bf16` bf16 autocast; `onnx` onnxruntime CPU with all graph optimisations; `onnx-noopt` "
        "onnxruntime with graph optimisations disabled (the before/after of ORT's fusions); "
        "`onnx-int8` onnxruntime on the statically quantized graph (QDQ, per-channel int8 weights, "
        f"uint8 activations; calibrated on {B.INT8_BENCH_CALIBRATION} random-normal inputs, as the "
        "weights are random too: a latency figure, not an accuracy one).",
    ]


def _train_section(report: dict[str, Any]) -> list[str]:
    o = report["options"]
    t = o.train
    out = [
        "",
        f"## Training step (crop {t.crop[0]}×{t.crop[1]}, batch {t.batch} source + {t.batch} target, "
        f"large {t.large}, small {t.small}, median of {o.reps}, AdamW update included)",
        "",
        train_table(report["train"], report["peak"]),
        "",
        f"Cases: {cases_line()}. FLOPs are counted with `FlopCounterMode` (grouped-conv "
        "backward fixed) over one full step, forward + backward.",
        "",
    ]
    return out + [f"- {s}" for s in train_findings(report["train"])]


def _profile_section(report: dict[str, Any]) -> list[str]:
    p = report["profile"]
    label = bench_case(B.reference_case()).label
    return [
        "",
        f"### Where the time goes: {label} step, fp32 ({p['total_s']:.1f} s profiled)",
        "",
        profile_table(p),
    ]


def render_markdown(report: dict[str, Any]) -> str:
    out = _header(report)
    if "inference" in report:
        out += _inference_section(report)
    if "train" in report:
        out += _train_section(report)
    if "profile" in report:
        out += _profile_section(report)
    if "loader" in report:
        out += ["", "## Data loading", ""]
        out += loader_lines(report["loader"], report.get("train"))
    return "\n".join(out) + "\n"
