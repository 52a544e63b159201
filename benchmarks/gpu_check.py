"""Training-step time and peak memory on one GPU, and full-size inference; one Markdown table.

    bash benchmarks/gpu_check.sh             # on a GPU machine: ~3-6 minutes on one H200-class GPU
    bash benchmarks/gpu_check.sh --dry-run   # tiny sizes on the CPU: checks that the script runs

Cases, each at the paper's crop (512×512, batch 2 source + 2 target): DAFormer with MiT-B5;
DUDA B5→B0 stage 1 (EMA teacher + large student + small student) and stage 2 (small student
fine-tuned on the frozen teacher's pseudo-labels weighted by I'_c); HRDA if this version has it.
Precisions: fp32 (TF32 off), TF32 matmuls/convolutions, bf16 autocast. Then inference of
SegFormer-B0 and DAFormer-B5 at 1024×2048, batch 1. Random weights and random data: only speed
and memory are measured. Each case runs in a fresh CUDA memory account (peak = max allocated).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from duda.config import config_from_dict
from duda.deploy.bench import TrainSetup, experiment_dict, random_batch
from duda.methods import StepContext, build_method
from duda.models import build_model

TINY = {"embed_dims": [8, 16, 16, 32], "head_channels": 16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _precision(name: str) -> None:
    tf32 = name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def available_cases(setup: TrainSetup) -> list[str]:
    """DAFormer and DUDA's two stages, and HRDA where this version of duda has the method."""
    from duda.errors import DudaError

    cases = ["daformer", "duda-stage1", "duda-stage2"]
    try:
        config_from_dict(experiment_dict("hrda", setup, False))
        cases.append("hrda")
    except DudaError:
        pass
    return cases


def train_case(case: str, setup: TrainSetup, precision: str, device: torch.device, reps: int) -> dict:
    _precision(precision)
    torch.manual_seed(0)
    exp = experiment_dict(case, setup, precision == "bf16")
    exp["train"]["device"] = device.type
    cfg = config_from_dict(exp)
    method = build_method(cfg, setup.num_classes, device)
    if case == "duda-stage2":
        method.inconsistency = torch.linspace(0, 1, setup.num_classes, device=device)
    for name in method.spans():
        method.networks[name].train()
    params = [p for n in method.spans() for p in method.networks[n].parameters()]
    optim = torch.optim.AdamW(params, lr=1e-6)
    batch = {k: v.to(device) for k, v in random_batch(setup, crop=cfg.data.crop_size).items()}
    step = cfg.method.duda.stage1_iters + 1 if case == "duda-stage2" else 1

    def one_step() -> None:
        ctx = StepContext(step=step, generator=torch.Generator().manual_seed(step))
        method.train_step(batch, ctx)
        optim.step()
        optim.zero_grad(set_to_none=True)

    _reset_peak(device)
    one_step()  # warm-up (cuDNN autotuning, allocator)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        one_step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    out = {"step_s": statistics.median(times), "peak_gb": _peak_gb(device)}
    return out


def infer_case(name: str, arch: dict, size: tuple[int, int], precision: str, device, reps: int) -> dict:
    _precision(precision)
    model = build_model(name, num_classes=19, **arch).to(device).eval()
    x = torch.randn(1, 3, *size, device=device)
    _reset_peak(device)
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
        model(x)
        times = []
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "peak_gb": _peak_gb(device)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny models and crops on the CPU")
    p.add_argument("--reps", type=int, default=None, help="timed steps per case (default 10, dry run 1)")
    p.add_argument("--precisions", default="fp32,tf32,bf16")
    args = p.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if dry else "cuda")
    reps = args.reps or (1 if dry else 10)
    precisions = [s for s in args.precisions.split(",") if s]
    if dry:
        setup = TrainSetup(
            large="daformer_mit_tiny", small="segformer_mit_tiny", crop=(64, 64), batch=2,
            arch_large=dict(TINY), arch_small=dict(TINY),
        )  # fmt: skip
        infer = [("segformer_mit_tiny", TINY, "SegFormer tiny"), ("daformer_mit_tiny", TINY, "DAFormer tiny")]
        size = (64, 128)
    else:
        setup = TrainSetup(large="daformer_mitb5", small="segformer_mitb0", crop=(512, 512), batch=2)
        infer = [("segformer_mitb0", {}, "SegFormer-B0"), ("daformer_mitb5", {}, "DAFormer-B5")]
        size = (1024, 2048)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (dry run)"
    print(f"# GPU check: {name}, torch {torch.__version__}, {'dry run' if dry else 'full size'}\n")
    print(
        f"Training: crop {setup.crop[0]}×{setup.crop[1]}, batch {setup.batch}+{setup.batch}, large "
        f"{setup.large}, small {setup.small}; median of {reps} steps after one warm-up.\n"
    )
    print("| case | precision | s / step | peak memory (GiB) |")
    print("|---|---|---|---|")
    t_all = time.perf_counter()
    for case in available_cases(setup):
        for precision in precisions:
            try:
                r = train_case(case, setup, precision, device, reps)
                mem = "–" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
                print(f"| {case} | {precision} | {r['step_s']:.3f} | {mem} |", flush=True)
            except torch.OutOfMemoryError:
                print(f"| {case} | {precision} | out of memory | – |", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"\nInference: batch 1 at {size[0]}×{size[1]}, whole image, median of {reps}.\n")
    print("| model | precision | s / image | peak memory (GiB) |")
    print("|---|---|---|---|")
    for model_name, arch, label in infer:
        for precision in precisions:
            r = infer_case(model_name, arch, size, precision, device, reps)
            mem = "–" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
            print(f"| {label} | {precision} | {r['step_s']:.4f} | {mem} |", flush=True)
    print(f"\n(total {time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
