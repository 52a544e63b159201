"""One module per `duda` subcommand; each exposes ``register(subparsers)``.

`duda` builds its parser from every command module (``duda.cli``), so these modules import only
the standard library at module level; what a command runs is imported inside its function. The
reason, measured on the 2-core AVX2 development machine: importing ``duda.cli`` and building the
parser takes 0.05 s without torch, while ``import torch`` alone takes 1.7 s and torch with
transformers' SegFormer 3.0 s — every ``duda --help``, typo and ``duda config show`` would pay it.
These are the only in-function imports of duda modules besides the few marked where they stand
(an optional dependency, or a module-level import that would be circular).
"""

from __future__ import annotations

import argparse


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable, VALUE is YAML) into ``args.overrides``: the config
    overrides every command that reads an experiment config takes."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.iters=1000 (repeatable; VALUE is YAML)",
    )
