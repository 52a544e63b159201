"""`duda plan CONFIG`: the predicted peak GPU memory of a training step, without a GPU."""

from __future__ import annotations

import argparse

from duda.commands import add_overrides_argument
from duda.errors import ConfigError

# duda's modules are imported in the functions that run the command: ``duda`` imports every
# command module to build its parser; torch and the methods (about 1.4 s; duda.config alone
# 60 ms, 3x all of duda.cli) must not slow ``duda --help`` and the other commands.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="predict the peak GPU memory of a training step of CONFIG (no GPU needed)",
        description=(
            "Run one training step of CONFIG's method on fake tensors (shapes without data: no GPU, "
            "no real memory, no datasets or weights read) and print the predicted peak GPU memory "
            "(torch.cuda.max_memory_allocated) per network: weights, gradients, AdamW state, and "
            "what the forward passes hold at the peak. With --gpu-mem, check the budget and try "
            "the switches that lower it: activation checkpointing of the large encoder, bf16 "
            "autocast, feature distance off, a smaller crop. See docs/memory.md."
        ),
    )
    p.add_argument("config", help="YAML experiment config (or the name of a shipped one)")
    add_overrides_argument(p)
    p.add_argument(
        "--gpu-mem",
        type=float,
        metavar="GB",
        help="GPU memory in GiB (24 for a 24 GB card): say whether the step fits, with the CUDA "
        "context and allocator reserve added, and which switches bring it under",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.engine.memory import advise, format_advice, format_plan, plan_config

    if args.gpu_mem is not None and not args.gpu_mem > 0:
        raise ConfigError(f"--gpu-mem: expected a positive number of GiB, got {args.gpu_mem:g}")
    plan = plan_config(args.config, list(args.overrides))
    print(format_plan(plan), flush=True)
    if args.gpu_mem is not None:
        print(flush=True)
        advice = advise(args.config, list(args.overrides), args.gpu_mem, plan=plan)
        print(format_advice(advice, args.config))
    return 0
