"""Command-line entry point: argument parsing only.

Each subcommand lives in ``duda.commands.<name>`` and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to the one library function it calls. Heavy imports (torch, models)
happen inside those functions so that ``duda --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from duda._version import __version__
from duda.errors import DudaError

# Order is the order shown by `duda --help`.
COMMANDS = [
    "prepare",
    "synth",
    "pretrain",
    "models",
    "config",
    "train",
    "plan",
    "eval",
    "predict",
    "inconsistency",
    "export",
    "convert",
    "bench",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duda",
        description="Distilled unsupervised domain adaptation for lightweight semantic segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"duda {__version__}")
    _add_verbosity(parser, argparse.SUPPRESS)
    _add_import(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_subparser = sub.add_parser

    def add_parser(*args, **kw):  # every command also takes --quiet / --verbose after its name
        p = _add_subparser(*args, **kw)
        _add_verbosity(p, argparse.SUPPRESS)
        _add_import(p, argparse.SUPPRESS)
        return p

    sub.add_parser = add_parser  # type: ignore[method-assign]
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"duda.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet in this checkout
            if exc.name != f"duda.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="log warnings and errors only"
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="also log debug messages"
    )


def _add_import(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        default=default,
        help="import MODULE first: a module of your own that registers a method "
        "(@duda.methods.register_method); repeatable",
    )


def main(argv: list[str] | None = None) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda import log

    parser = build_parser()
    args = parser.parse_args(argv)
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    if quiet and verbose:
        parser.error("--quiet and --verbose exclude each other")
    log.setup(log.QUIET if quiet else log.VERBOSE if verbose else log.NORMAL)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "imports", None):
            from duda.methods.registry import import_method_modules

            import_method_modules(args.imports)
        result = args.func(args)
    except DudaError as exc:
        print(f"duda {args.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except BrokenPipeError:  # `duda ... | head`: the reader left; not an error of the command
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file system failure no check foresaw: still one line, no traceback
        from duda.files import reason

        where = " ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        print(f"duda {args.command}: error: {where + ': ' if where else ''}{reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"duda {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
