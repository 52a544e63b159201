"""Predicted peak training memory of the paper configs (`duda plan`), against the published anchors.

    python benchmarks/memory_plan.py                # ≈ 10-20 min on one busy CPU core
    python benchmarks/memory_plan.py --budget 24    # the GPU size the DUDA recipes must fit (GiB)
    python benchmarks/memory_plan.py --no-reference # skip the reference-like (eager attention) column

Prints one Markdown table: each config's predicted peak (GiB, torch.cuda.max_memory_allocated of
a training step of duda's code, fp32), the same with the reference implementation's eager
attention (the mmseg MiT materialises the attention matrices; duda's MiT uses PyTorch's fused
attention on transformers 5.x), the published anchor and the error of each. Then, for the DUDA
configs, every switch of `duda plan --gpu-mem` with its predicted peak and the recipe that fits
the budget. No GPU is used: the steps run on fake tensors (duda.engine.memory).
"""

from __future__ import annotations

import argparse
import time

from duda.engine.memory import GIB, advise, plan_config
from duda.models.mit import MiTBackbone

#: (config, published peak in GiB: DAFormer / HRDA papers, mmcv + torch 1.7, fp32, batch 2)
ANCHORS = [
    ("gta2cs/daformer_mitb5", 9.7),
    ("gta2cs/hrda_mitb5", 22.5),
]
DUDA = ["gta2cs/duda_mitb5_mitb0", "gta2cs/duda_mic_hrda_mitb5_mitb0"]


def eager_attention(net, name: str) -> None:
    """The reference's attention: the softmax matrix is formed and saved for the backward pass
    (transformers' eager SegFormer attention, as duda runs on transformers 4.x)."""
    for module in net.modules():
        if isinstance(module, MiTBackbone):
            module.encoder.config._attn_implementation = "eager"


def _err(predicted: float, anchor: float) -> str:
    return f"{100 * (predicted - anchor) / anchor:+.0f} %"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget", type=float, default=24.0, help="GPU memory the DUDA recipes must fit (GiB)"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the eager-attention column")
    args = parser.parse_args()

    header = ["config", "predicted (GiB)", "with eager attention (GiB)", "anchor (GiB)", "error"]
    print("| " + " | ".join([*header, "error, eager", "peak during"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for path, anchor in ANCHORS:
        t = time.perf_counter()
        plan = plan_config(path)
        eager = None if args.no_reference else plan_config(path, configure=eager_attention)
        cells = [
            path,
            f"{plan.peak / GIB:.2f}",
            f"{eager.peak / GIB:.2f}" if eager else "—",
            f"{anchor:.1f}",
            _err(plan.peak / GIB, anchor),
            _err(eager.peak / GIB, anchor) if eager else "—",
            plan.peak_phase,
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
        print(f"<!-- {path}: {time.perf_counter() - t:.0f} s -->", flush=True)

    print()
    for path in DUDA:
        t = time.perf_counter()
        advice = advise(path, [], args.budget)
        plan = advice.plan
        print(f"### {path}: predicted {plan.peak / GIB:.2f} GiB, needs {plan.required_gib():.2f} GiB")
        print()
        print("| switch | --set | predicted (GiB) | needs (GiB) |")
        print("|---|---|---|---|")
        print(f"| none | | {plan.peak / GIB:.2f} | {plan.required_gib():.2f} |")
        for switch, switched in advice.options:
            sets = " ".join(f"`{o}`" for o in switch.overrides)
            print(f"| {switch.name} | {sets} | {switched.peak / GIB:.2f} | {switched.required_gib():.2f} |")
        if advice.recipe is None:
            print(f"\nnothing tried fits {args.budget:g} GiB")
        elif not advice.recipe:
            print(f"\nfits {args.budget:g} GiB as it is")
        else:
            names = " + ".join(s.name for s in advice.recipe)
            print(f"\nrecipe for {args.budget:g} GiB: {names} ({advice.recipe_plan.peak / GIB:.2f} GiB)")
        print(f"<!-- {path}: {time.perf_counter() - t:.0f} s -->\n", flush=True)


if __name__ == "__main__":
    main()
