"""`duda config show CONFIG`: the fully resolved config, with the file that set each key;
`duda config list`: the configs shipped with the package; `duda config methods`: the registered
methods and what each declares."""

from __future__ import annotations

import argparse

from duda.commands import add_overrides_argument

# duda's modules are imported in the functions that run the command: ``duda`` imports every
# command module to build its parser; torch and the methods (about 1.4 s; duda.config alone
# 60 ms, 3x all of duda.cli) must not slow ``duda --help`` and the other commands.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="inspect experiment configs (duda config show CONFIG)",
        description="Inspect experiment configs.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print the resolved config with the file that set each key",
        description=(
            "Print CONFIG fully resolved (its _base_ files merged, then the --set overrides, then the "
            "built-in defaults) as YAML that `duda train` accepts. Each key's comment names where its "
            "value comes from: the config file or one of its bases, --set, or default; then what the "
            "key means."
        ),
    )
    show.add_argument("config", help="YAML experiment config")
    add_overrides_argument(show)
    show.set_defaults(func=run_show)
    listing = actions.add_parser(
        "list",
        help="list the configs shipped with duda (usable by name from any folder)",
        description=(
            "List the paper benchmarks' configs shipped inside the package. `duda train NAME` accepts "
            "them by name (e.g. gta2cs/duda_mitb5_mitb0) from any folder; copy one to change it."
        ),
    )
    listing.set_defaults(func=run_list)
    methods = actions.add_parser(
        "methods",
        help="list the registered methods (method.name), with the config sections each reads",
        description=(
            "List every method `method.name` accepts: duda's own, those of installed packages "
            "('duda.methods' entry points) and those of modules given with `duda --import MODULE`."
        ),
    )
    methods.set_defaults(func=run_methods)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_show(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.methods import show_config

    print(show_config(args.config, list(args.overrides)), end="")
    return 0


def run_list(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.config import packaged_configs_dir

    root = packaged_configs_dir()
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if rel.parts[0] != "_base_":
            print(rel.with_suffix("").as_posix())
    print(f"({root}; bases in _base_/)")
    return 0


def run_methods(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.methods import method_class, method_names

    for name in method_names():
        cls = method_class(name)
        sections = ", ".join(f"method.{s}" for s in cls.sections) or "-"
        print(f"{name:<12} {cls.summary}")
        print(f"{'':<12} reads {sections}; class {cls.__module__}.{cls.__qualname__}")
    return 0
