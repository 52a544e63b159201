"""``duda synth``: write the procedural street-scene benchmark (source + target domains)."""

from __future__ import annotations

import argparse

from duda.errors import DatasetError


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``256x512``) into (height, width)."""
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise DatasetError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 256x512") from None
    if h < 32 or w < 32:
        raise DatasetError(f"--size {text!r}: height and width must be at least 32")
    return h, w


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate the built-in procedural street-scene benchmark",
        description=(
            "Write a clean 'game' source in the GTA layout (OUT/source) and Cityscapes-layout targets "
            "(OUT/real, OUT/night, OUT/fog), deterministically from a seed. Existing files of the same "
            "generator version, seed and size are kept. See docs/benchmark.md."
        ),
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="benchmark seed (default 0, the documented benchmark)")
    p.add_argument("--size", default="256x512", help="image size HEIGHTxWIDTH (default 256x512)")
    p.add_argument(
        "--n-source", type=int, default=2000, help="number of source ('game') images (default 2000)"
    )
    p.add_argument(
        "--n-train", type=int, default=2000, help="target training images per domain (default 2000)"
    )
    p.add_argument(
        "--n-val", type=int, default=500, help="labelled target validation images per domain (default 500)"
    )
    p.add_argument(
        "--domains", default="real,night,fog", help="comma-separated target domains (default real,night,fog)"
    )
    p.add_argument("--workers", type=int, default=1, help="processes writing in parallel (default 1)")
    p.add_argument("--sheet", default=None, help="also save a picture sheet of every domain to this PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    import time

    from duda.data.synth import generate_benchmark, render_sheet

    size = parse_size(args.size)
    domains = tuple(d.strip() for d in args.domains.split(",") if d.strip())
    for name, value in (("--n-source", args.n_source), ("--n-train", args.n_train), ("--n-val", args.n_val)):
        if value < 0:
            raise DatasetError(f"{name} {value}: expected a count >= 0")
    if args.workers < 1:
        raise DatasetError(f"--workers {args.workers}: expected at least 1")
    start = time.perf_counter()
    folders = generate_benchmark(
        args.out,
        seed=args.seed,
        size=size,
        n_source=args.n_source,
        n_target_train=args.n_train,
        n_target_val=args.n_val,
        domains=domains,
        workers=args.workers,
    )
    for name, folder in folders.items():
        print(f"{name:>6}: {folder}")
    if args.sheet:
        print(f" sheet: {render_sheet(args.sheet, seed=args.seed, size=size, domains=('game', *domains))}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
