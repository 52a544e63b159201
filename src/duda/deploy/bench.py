"""`duda bench`: inference latency, training-step cost and loader throughput, side by side.

Every figure of one report is measured in one run on one machine. Each case (one model and
backend, or one method and precision) runs in a fresh spawned process, so that its peak resident
memory (Linux ``VmHWM``) is its own and not a left-over of an earlier case; the memory columns are
that peak and its rise over the process after imports (weights + activations + workspace).

Achieved GFLOP/s are set against a large matrix product in the same precision measured in the same
run (the machine's practical limit). bf16 on a CPU without bf16 units is hundreds of times slower
than fp32; a bf16 case whose time, extrapolated from its FLOPs and the measured bf16 matmul rate,
exceeds ``bf16_cap_s`` is reported as skipped with that estimate instead of being run.

Imports that stay inside functions: onnxruntime and the ONNX export / quantization modules (the
optional ``export`` extra; they also pull in onnx, cv2 and the evaluation code, whose memory would
count in the peak of every spawned case that does not use them), the data-loading modules (the
loader case only), and ``resource`` (POSIX only).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from duda.log import info
from duda.methods import StepContext, build_method, config_from_dict
from duda.methods.bench_cases import bench_case, bench_cases, default_case_names
from duda.models import build_model, count_flops
from duda.models.flops import flop_counter

INFERENCE_BACKENDS = ("torch-fp32", "torch-fp32-cl", "torch-bf16", "onnx", "onnx-noopt", "onnx-int8")
#: Random-normal inputs the ``onnx-int8`` backend calibrates its activations on (latency only: the
#: models here have random weights, so accuracy means nothing; a real INT8 export calibrates on
#: target images, see ``duda export --quantize int8``).
INT8_BENCH_CALIBRATION = 2


def train_case_names() -> list[str]:
    """Every training case the registered methods declare (:mod:`duda.methods.bench_cases`)."""
    return list(bench_cases())


def default_train_cases() -> list[str]:
    """The training cases run without ``--cases`` (declared by the methods)."""
    return list(default_case_names())


def reference_case() -> str | None:
    """The case the others are compared with and the one profiled (the one-network large-model
    step), None when no method declares one."""
    return next((c.name for c in bench_cases().values() if c.reference), None)


# --------------------------------------------------------------------------- machine


def read_status_mb(key: str) -> float:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``) in MB; 0 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def machine_info(threads: int) -> dict[str, Any]:
    """What the figures depend on: CPU, cores, SIMD, library versions, threads, load."""
    import onnxruntime

    flags = cpu_flags()
    # VNNI (int8 dot products) decides the speed of onnx-int8; bf16/AMX that of torch-bf16
    wanted = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    simd = [f for f in wanted if f in flags]
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "simd": ", ".join(simd) or "unknown",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def matmul_gflops(n: int, dtype: torch.dtype, reps: int = 3) -> float:
    """Achieved GFLOP/s of an n×n by n×n matrix product (best of ``reps`` after a warm-up)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def run_isolated(fn: Callable[..., dict], *args: Any) -> dict:
    """``fn(*args)`` in a fresh spawned process (its own peak memory); its result dict.

    An exception in ``fn`` is raised here; a process that dies without answering (e.g. killed by
    the kernel for memory) raises :class:`IsolatedCaseDied` instead of waiting forever."""
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_isolated_entry, args=(fn, args, child_end))
    proc.start()
    child_end.close()
    try:
        while True:
            closed = False
            if parent_end.poll(1.0):
                try:
                    kind, value = parent_end.recv()
                    break
                except EOFError:  # the child closed the pipe by dying
                    closed = True
                    proc.join(timeout=30)
            if closed or not proc.is_alive() and not parent_end.poll(0):
                raise IsolatedCaseDied(
                    f"{getattr(fn, '__name__', fn)}: the benchmark process died without a result (exit "
                    f"code {proc.exitcode}; -9 is usually the kernel's out-of-memory killer)"
                )
    finally:
        proc.join(timeout=30)
        parent_end.close()
    if kind == "error":
        raise value
    return value


class IsolatedCaseDied(RuntimeError):
    """A benchmark case's process ended without returning (killed, crashed)."""


def _isolated_entry(fn: Callable[..., dict], args: tuple, conn) -> None:
    try:
        result = ("ok", fn(*args))
    except BaseException as exc:  # passed to the parent, which raises it
        result = ("error", exc)
    try:
        conn.send(result)
    except Exception as exc:  # an exception that cannot be pickled: its text instead
        conn.send(("error", RuntimeError(f"{type(result[1]).__name__}: {result[1]} ({exc})")))
    finally:
        conn.close()


def timed(fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
    """Seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------- inference


@dataclass
class InferenceRow:
    model: str
    backend: str
    size: tuple[int, int]
    latency_s: float | None = None  # median seconds per image (batch 1)
    images_per_s: float | None = None
    peak_mb: float | None = None
    delta_mb: float | None = None
    gflop: float | None = None  # forward FLOPs / 1e9
    note: str = ""


def _inference_torch(name: str, size: tuple[int, int], backend: str, reps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    base = read_status_mb("VmRSS")
    torch.manual_seed(0)
    model = build_model(name, num_classes=19).eval()
    x = torch.randn(1, 3, *size)
    if backend == "torch-fp32-cl":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    bf16 = backend == "torch-bf16"

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    times = timed(forward, reps)
    return {"times": times, "peak_mb": read_status_mb("VmHWM"), "delta_mb": read_status_mb("VmHWM") - base}


def _export_for_bench(name: str, size: tuple[int, int], path: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    from duda.deploy.onnx_export import torch_to_onnx

    torch.manual_seed(0)
    model = build_model(name, num_classes=19).eval()
    start = time.perf_counter()
    torch_to_onnx(model, Path(path), size[0], size[1], dynamic=False)
    return {"export_s": time.perf_counter() - start}


def _quantize_for_bench(
    fp32_path: str, path: str, size: tuple[int, int], calibration: int, threads: int
) -> dict:
    from duda.deploy.onnx_export import random_inputs
    from duda.deploy.quantize import array_feed, quantize_onnx

    torch.set_num_threads(threads)
    # onnxruntime's calibration keeps every intermediate tensor of every calibration input: for a
    # large model at full size that exceeds the machine (DAFormer-B5 at 512x1024: > 24 GB, killed
    # by the kernel). Under an address-space cap the allocation fails here instead, and the row
    # says so.
    cap = _memory_cap_bytes()
    if cap:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="duda_quant_") as work:
            feed = array_feed(random_inputs(size[0], size[1], calibration, seed=7))
            quantize_onnx(Path(fp32_path), Path(path), feed, Path(work))
    except Exception as exc:  # MemoryError, or onnxruntime reporting a failed allocation
        if (
            "memory" not in str(exc).lower()
            and "alloc" not in str(exc).lower()
            and not isinstance(exc, MemoryError)
        ):
            raise
        return {"error": f"calibration ran out of memory (capped at {cap / 2**30:.0f} GB)"}
    return {"quantize_s": time.perf_counter() - start}


def _memory_cap_bytes() -> int | None:
    """Three quarters of the machine's memory (Linux), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 * 3 // 4
    except OSError:
        return None
    return None


def _inference_onnx(path: str, size: tuple[int, int], optimize: bool, reps: int, threads: int) -> dict:
    from duda.deploy.onnx_export import OnnxLogits

    base = read_status_mb("VmRSS")
    runner = OnnxLogits(path, threads=threads, optimize=optimize)
    x = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
    times = timed(lambda: runner(x), reps)
    return {"times": times, "peak_mb": read_status_mb("VmHWM"), "delta_mb": read_status_mb("VmHWM") - base}


def bench_inference(
    models: list[str],
    size: tuple[int, int],
    backends: list[str],
    reps: int,
    threads: int,
    bf16_gflops: float,
    bf16_cap_s: float,
    log: Callable[[str], None] = info,
) -> list[InferenceRow]:
    """One row per (model, backend): median latency, images/s and peak memory at batch 1."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="duda_bench_") as tmp:
        for name in models:
            gflop = count_flops(name, size) / 1e9
            onnx_path = str(Path(tmp) / f"{name}.onnx")
            exported = False
            for backend in backends:
                row = InferenceRow(name, backend, size, gflop=gflop)
                rows.append(row)
                if backend == "torch-bf16":
                    estimate = gflop / bf16_gflops
                    if estimate > bf16_cap_s:
                        row.note = (
                            f"skipped (would take ≈ {estimate:.0f} s per image at {bf16_gflops:.2f} GFLOP/s)"
                        )
                        log(f"  {name} {backend}: {row.note}")
                        continue
                if backend.startswith("onnx"):
                    if not exported:
                        export_s = run_isolated(_export_for_bench, name, size, onnx_path, threads)["export_s"]
                        exported = True
                        row.note = f"export {export_s:.0f} s"
                    path = onnx_path
                    if backend == "onnx-int8":
                        path = str(Path(tmp) / f"{name}.int8.onnx")
                        n = INT8_BENCH_CALIBRATION
                        try:
                            quant = run_isolated(_quantize_for_bench, onnx_path, path, size, n, threads)
                        except IsolatedCaseDied as exc:
                            quant = {"error": str(exc)}
                        if "error" in quant:
                            row.note = (row.note + "; " if row.note else "") + f"skipped: {quant['error']}"
                            log(f"  {name} {backend}: {row.note}")
                            continue
                        quant_s = quant["quantize_s"]
                        row.note = (row.note + "; " if row.note else "") + (
                            f"static QDQ, per-channel weights, calibrated on {n} random-normal inputs; "
                            f"quantize {quant_s:.0f} s"
                        )
                    out = run_isolated(_inference_onnx, path, size, backend != "onnx-noopt", reps, threads)
                else:
                    out = run_isolated(_inference_torch, name, size, backend, reps, threads)
                row.latency_s = statistics.median(out["times"])
                row.images_per_s = 1.0 / row.latency_s
                row.peak_mb, row.delta_mb = out["peak_mb"], out["delta_mb"]
                log(f"  {name} {backend}: {row.latency_s:.3f} s/image, peak {row.peak_mb:.0f} MB")
    return rows


# --------------------------------------------------------------------------- training step


@dataclass
class TrainSetup:
    """The model/crop pair every training case uses."""

    large: str = "daformer_mitb5"
    small: str = "daformer_mitb0"
    crop: tuple[int, int] = (256, 256)
    batch: int = 2
    num_classes: int = 19
    arch_large: dict = field(default_factory=dict)
    arch_small: dict = field(default_factory=dict)


@dataclass
class TrainRow:
    case: str
    precision: str
    networks: str
    step_s: float | None = None
    peak_mb: float | None = None
    delta_mb: float | None = None  # peak over the process after building the method
    gflop: float | None = None  # FLOPs of one step (forward + backward) / 1e9
    gflops: float | None = None  # achieved GFLOP/s
    frozen_ok: str = ""
    note: str = ""


def experiment_dict(case: str, setup: TrainSetup, bf16: bool) -> dict:
    """A config (as a dict) for ``case`` on ``setup``; dataset roots are never read.

    The case's method declares its model (large or small), crop scale (a multi-resolution
    method trains on crops twice the size with a detail crop of ``setup.crop``) and the method
    sections (:class:`duda.methods.bench_cases.BenchCase`)."""
    bc = bench_case(case)
    large = {"name": setup.large, "arch": dict(setup.arch_large)}
    small = {"name": setup.small, "arch": dict(setup.arch_small)}
    return {
        "model": small if bc.trains_small else large,
        "data": {
            "source": {"type": "gta", "root": "unused"},
            "target": {"type": "cityscapes", "root": "unused"},
            "crop_size": [bc.crop_scale * v for v in setup.crop],
            "batch_size": setup.batch,
        },
        "method": {"name": bc.method, **bc.sections(large, small, tuple(setup.crop))},
        "train": {"iters": 10, "device": "cpu", "bf16": bf16},
    }


def random_batch(setup: TrainSetup, seed: int = 0, crop: tuple[int, int] | None = None) -> dict:
    """A training batch of random tensors with plausible label statistics (``crop``: the size
    when not ``setup.crop``)."""
    g = torch.Generator().manual_seed(seed)
    b, (h, w), k = setup.batch, tuple(crop or setup.crop), setup.num_classes
    # label blocks of 16 px so that ClassMix and the feature-distance cells see regions, not noise
    coarse = torch.randint(0, k, (b, (h + 15) // 16, (w + 15) // 16), generator=g)
    src_gt = coarse.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, :h, :w].contiguous()
    src_gt[:, :4] = 255
    valid = torch.ones(b, h, w)
    valid[:, : h // 32] = 0
    return {
        "src_img": torch.randn(b, 3, h, w, generator=g),
        "src_gt": src_gt,
        "tgt_img": torch.randn(b, 3, h, w, generator=g),
        "tgt_gt": torch.full((b, h, w), 255, dtype=torch.long),
        "tgt_valid": valid,
    }


def frozen_report(method) -> tuple[str, Callable[[], str]]:
    """Check the frozen networks: no parameter requires grad, and (after a step, via the returned
    function) every forward of them ran with gradients disabled."""
    frozen = {n: net for n, net in method.networks.items() if n in ("teacher", "imnet")}
    trainable_grad = [n for n, net in frozen.items() if any(p.requires_grad for p in net.parameters())]
    calls: dict[str, list[bool]] = {n: [] for n in frozen}
    for n, net in frozen.items():
        net.register_forward_pre_hook(lambda _m, _i, n=n: calls[n].append(torch.is_grad_enabled()))
    static = "requires_grad False" if not trainable_grad else f"requires_grad TRUE on {trainable_grad}"

    def after() -> str:
        with_grad = [n for n, c in calls.items() if any(c)]
        ran = [n for n, c in calls.items() if c]
        grads = [n for n, net in frozen.items() if any(p.grad is not None for p in net.parameters())]
        parts = [static, f"forwards of {'+'.join(ran) or 'none'} under no_grad" if not with_grad else
                 f"GRAD ENABLED in forward of {with_grad}"]  # fmt: skip
        if grads:
            parts.append(f".grad set on {grads}")
        return "; ".join(parts) if frozen else "no frozen networks"

    return static, after


def _train_case(case: str, setup: TrainSetup, bf16: bool, reps: int, threads: int, count: bool) -> dict:
    torch.set_num_threads(threads)
    bc = bench_case(case)
    torch.manual_seed(0)
    cfg = config_from_dict(experiment_dict(case, setup, bf16))
    method = build_method(cfg, setup.num_classes, torch.device("cpu"))
    if bc.prepare is not None:  # e.g. state a step of a later stage needs, given directly
        bc.prepare(method, setup.num_classes)
    for name in method.spans():  # as the loop does before training
        method.networks[name].train()
    params = [p for n in method.spans() for p in method.networks[n].parameters()]
    optim = torch.optim.AdamW(params, lr=1e-6)
    batch = random_batch(setup, crop=cfg.data.crop_size)
    step = bc.step
    _, after = frozen_report(method)
    base = read_status_mb("VmRSS")

    def one_step() -> None:
        ctx = StepContext(step=step, generator=torch.Generator().manual_seed(step))
        method.train_step(batch, ctx)
        optim.step()
        optim.zero_grad(set_to_none=True)

    flops = 0
    if count:  # the counted step doubles as the warm-up
        with flop_counter() as counter:
            one_step()
        flops = int(counter.get_total_flops())
    times = timed(one_step, reps, warmup=0 if count else 1)
    networks = ", ".join(
        f"{n}={net.spec['name']}{'' if n in method.spans() else ' (frozen)'}"
        for n, net in method.networks.items()
    )
    return {
        "times": times,
        "flops": flops,
        "peak_mb": read_status_mb("VmHWM"),
        "delta_mb": read_status_mb("VmHWM") - base,
        "frozen": after(),
        "networks": networks,
    }


def bench_train(
    setup: TrainSetup,
    cases: list[str],
    reps: int,
    threads: int,
    peak_gflops: dict[str, float],
    bf16_cap_s: float,
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    log: Callable[[str], None] = info,
) -> list[TrainRow]:
    """One row per (case, precision): step time, peak memory, FLOPs and achieved GFLOP/s."""
    rows = []
    fp32_flops: dict[str, float] = {}
    for precision in precisions:
        for case in cases:
            row = TrainRow(case, precision, "")
            rows.append(row)
            if precision == "bf16":
                estimate = fp32_flops.get(case, 0.0) / 1e9 / peak_gflops["bf16"]
                if estimate > bf16_cap_s:
                    rate = peak_gflops["bf16"]
                    row.note = f"skipped (would take ≈ {estimate:.0f} s per step at {rate:.2f} GFLOP/s)"
                    log(f"  {case} {precision}: {row.note}")
                    continue
            out = run_isolated(_train_case, case, setup, precision == "bf16", reps, threads, True)
            fp32_flops[case] = out["flops"]
            row.networks = out["networks"]
            row.step_s = statistics.median(out["times"])
            row.peak_mb, row.delta_mb = out["peak_mb"], out["delta_mb"]
            row.gflop = out["flops"] / 1e9
            row.gflops = row.gflop / row.step_s
            row.frozen_ok = out["frozen"]
            log(
                f"  {case} {precision}: {row.step_s:.2f} s/step, {row.gflops:.1f} GFLOP/s, "
                f"peak {row.peak_mb:.0f} MB"
            )
    return rows


def _profile_case(case: str, setup: TrainSetup, threads: int, top: int) -> dict:
    """The ``top`` operators by self CPU time over one step (after a warm-up step)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = config_from_dict(experiment_dict(case, setup, False))
    method = build_method(cfg, setup.num_classes, torch.device("cpu"))
    batch = random_batch(setup, crop=cfg.data.crop_size)
    method.train_step(batch, StepContext(step=1, generator=torch.Generator().manual_seed(1)))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        method.train_step(batch, StepContext(step=1, generator=torch.Generator().manual_seed(1)))
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {
        "ops": [
            {
                "op": e.key,
                "calls": e.count,
                "self_s": e.self_cpu_time_total / 1e6,
                "share": e.self_cpu_time_total / total,
            }  # fmt: skip
            for e in events[:top]
        ],
        "total_s": total / 1e6,
    }


# --------------------------------------------------------------------------- loader


@dataclass
class LoaderResult:
    workers: int
    batch: int
    images: int  # frames per synthetic dataset
    samples_per_s: float  # one sample = one source + one target crop
    crop: int
    note: str = ""


def _loader_speed_module():
    """``duda.deploy.loader_speed``: its tree builder and timer (shipped in the package)."""
    from duda.deploy import loader_speed

    return loader_speed


def bench_loader(images: int, workers: int, batches: int, batch: int, crop: int) -> LoaderResult:
    """Samples/s of ``build_train_loader`` over GTA-size (1914×1052) and Cityscapes-size frames."""
    from duda.data.datasets import CityscapesDataset, GTA5Dataset
    from duda.data.loader import UDATrainSet
    from duda.data.prepare import prepare_dataset

    ls = _loader_speed_module()
    with tempfile.TemporaryDirectory(prefix="duda_loader_") as tmp:
        gta_root, cs_root = ls.build_trees(Path(tmp), images)
        prepare_dataset("gta", gta_root, progress=False)
        prepare_dataset("cityscapes", cs_root, progress=False)
        train = UDATrainSet(GTA5Dataset(gta_root), CityscapesDataset(cs_root, "train"), crop, seed=0)
        rate = ls.loader_rate(train, workers, batches, batch)
    return LoaderResult(workers, batch, images, rate, crop)


def as_dict(rows: list) -> list[dict]:
    return [asdict(r) for r in rows]
