"""One module per `duda` subcommand; each exposes ``register(subparsers)``."""

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
