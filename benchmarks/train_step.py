"""Training-step time, peak memory and achieved GFLOP/s of source-only, DAFormer, MIC and DUDA.

Thin wrapper over ``duda.deploy.bench.bench_train``: configs built in code, random batches, one
fresh process per case, FLOPs of one full step counted with ``FlopCounterMode``, set against a
large matrix product of the same precision. Same as ``duda bench --only train`` without a report:

    python benchmarks/train_step.py                                    # MiT-B5 -> MiT-B0, 256² crops
    python benchmarks/train_step.py --large daformer_mitb1 --crop 128 128 --cases daformer duda-stage1
"""

from __future__ import annotations

import argparse
import os

import torch

from duda.deploy import bench as B
from duda.deploy.bench_report import train_findings, train_table


def main() -> None:
    setup = B.TrainSetup()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large", default=setup.large, help="large model (teacher / large student)")
    parser.add_argument("--small", default=setup.small, help="small student of the DUDA cases")
    parser.add_argument("--crop", type=int, nargs=2, default=setup.crop, help="crop H W")
    parser.add_argument("--batch", type=int, default=setup.batch, help="source (and target) images per step")
    parser.add_argument("--cases", nargs="+", default=list(B.TRAIN_CASES), help="cases to time")
    parser.add_argument("--reps", type=int, default=3, help="timed steps per case (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--no-bf16", action="store_true", help="fp32 only")
    parser.add_argument(
        "--bf16-cap", type=float, default=60.0, help="skip bf16 cases estimated above this (s)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = B.TrainSetup(large=args.large, small=args.small, crop=tuple(args.crop), batch=args.batch)
    peak = {"fp32": B.matmul_gflops(2048, torch.float32), "bf16": B.matmul_gflops(256, torch.bfloat16, 1)}
    print(f"reference matmul: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.2f} GFLOP/s")
    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16")
    rows = B.bench_train(setup, args.cases, args.reps, args.threads, peak, args.bf16_cap, precisions)
    print(train_table(rows, peak))
    for line in train_findings(rows):
        print("-", line)


if __name__ == "__main__":
    main()
