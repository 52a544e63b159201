"""Batch-1 inference latency, images/s and peak memory: PyTorch fp32 / channels_last / bf16 and ONNX Runtime.

Thin wrapper over ``duda.deploy.bench.bench_inference`` (each case in a fresh process). Same as
``duda bench --only inference``, without writing a report:

    python benchmarks/inference_speed.py                                  # B0, R18, B5, R101 at 512×1024
    python benchmarks/inference_speed.py --models daformer_mitb0 --size 256 512 --backends torch-fp32 onnx
"""

from __future__ import annotations

import argparse
import os

import torch

from duda.deploy import bench as B
from duda.deploy.bench_report import BenchOptions, inference_table


def main() -> None:
    defaults = BenchOptions()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=defaults.inference_models, help="model names")
    parser.add_argument("--size", type=int, nargs=2, default=defaults.inference_size, help="input H W")
    parser.add_argument("--backends", nargs="+", default=list(B.INFERENCE_BACKENDS), help="backends to time")
    parser.add_argument("--reps", type=int, default=3, help="timed images per case (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch/onnxruntime threads")
    parser.add_argument(
        "--bf16-cap", type=float, default=60.0, help="skip bf16 cases estimated above this (s)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bf16 = B.matmul_gflops(256, torch.bfloat16, reps=1)
    print(f"bf16 reference matmul: {bf16:.2f} GFLOP/s")
    rows = B.bench_inference(
        args.models, tuple(args.size), args.backends, args.reps, args.threads, bf16, args.bf16_cap
    )
    print(inference_table(rows))


if __name__ == "__main__":
    main()
