"""Forward+backward speed of segmentation models on this machine, fp32 vs bf16 autocast.

For each model and precision: seconds per training-style iteration (forward, summed loss,
backward), the FLOPs of that iteration (counted with FlopCounterMode on the meta device, with
``duda.models.flops``' fix for grouped-conv backward) and the
achieved GFLOP/s, set against a large matrix product of the same precision measured in the same
run (a practical peak). bf16 on CPUs without bf16 hardware is very slow, so bf16 uses its own
(smaller) input size by default; the table states the size of every row.

    python benchmarks/model_speed.py                       # B0, B5, DeepLabV2-R101, batch 2, 512²
    python benchmarks/model_speed.py --reps 1 --bf16-size 64 --models daformer_mitb0
"""

from __future__ import annotations

import argparse
import time

import torch

from duda.deploy.bench import matmul_gflops
from duda.models import build_model
from duda.models.flops import flop_counter

DEFAULT_MODELS = ["daformer_mitb0", "segformer_mitb0", "daformer_mitb5", "deeplabv2_r101"]


def train_step_flops(name: str, batch: int, size: int) -> int:
    """FLOPs of forward + backward of ``name`` (shapes only, on the meta device)."""
    with torch.device("meta"):
        model = build_model(name).train()
        x = torch.empty(batch, 3, size, size)
    with flop_counter() as counter:
        model(x).float().mean().backward()
    return int(counter.get_total_flops())


def time_train_step(name: str, batch: int, size: int, bf16: bool, reps: int) -> float:
    """Median seconds of forward + backward (after one warm-up iteration)."""
    torch.manual_seed(0)
    model = build_model(name).train()
    x = torch.randn(batch, 3, size, size)
    times = []
    for i in range(reps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i > 0:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="model names to time")
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--size", type=int, default=512, help="square input side for fp32 (default 512)")
    parser.add_argument("--bf16-size", type=int, default=128, help="square input side for bf16 (default 128)")
    parser.add_argument("--reps", type=int, default=2, help="timed iterations per row (default 2)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--matmul-n", type=int, default=2048, help="side of the fp32 reference matmul")
    parser.add_argument("--matmul-n-bf16", type=int, default=512, help="side of the bf16 reference matmul")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peak = {"fp32": matmul_gflops(args.matmul_n, torch.float32, 3)}
    if not args.no_bf16:
        peak["bf16"] = matmul_gflops(args.matmul_n_bf16, torch.bfloat16, 2)
    print(f"threads={args.threads}  batch={args.batch}")
    print(f"reference matmul: fp32 {args.matmul_n}^3 {peak['fp32']:.1f} GFLOP/s", end="")
    print(f", bf16 {args.matmul_n_bf16}^3 {peak['bf16']:.2f} GFLOP/s" if "bf16" in peak else "")
    header = ("model", "dtype", "input", "s/iter", "GFLOP/iter", "GFLOP/s", "% matmul")
    print(
        f"{header[0]:<18} {header[1]:<5} "
        + " ".join(f"{h:>{w}}" for h, w in zip(header[2:], (9, 8, 10, 8, 8), strict=True))
    )
    for name in args.models:
        for dtype in peak:
            size = args.size if dtype == "fp32" else args.bf16_size
            flops = train_step_flops(name, args.batch, size)
            seconds = time_train_step(name, args.batch, size, dtype == "bf16", args.reps)
            rate = flops / seconds / 1e9
            print(
                f"{name:<18} {dtype:<5} {f'{args.batch}x{size}²':>9} {seconds:>8.2f} {flops / 1e9:>10.1f} "
                f"{rate:>8.1f} {100 * rate / peak[dtype]:>7.0f}%",
                flush=True,
            )


if __name__ == "__main__":
    main()
