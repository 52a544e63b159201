#!/usr/bin/env python3
"""The lowest declared versions of duda's dependencies, as pip requirements (for `make test-min`).

Reads ``pyproject.toml``: ``[project] dependencies`` and the ``export`` and ``dev`` extras, and
turns each ``name>=X`` into ``name==X``, so every declared lower bound is installed and tested
as it stands. A bound is therefore written as a version that exists (``4.8.0.76``, not ``4.8``).
torch is the exception: it is pinned to the CPU build that the development machines hold on
disk (``TORCH``), since any other version is a multi-GB CUDA download.

    python .ci/min_requirements.py           # print the requirements
    python .ci/min_requirements.py --check   # exit 1 unless the installed versions are exactly those
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TORCH = "2.13.0"
EXTRAS = ("export", "dev")
ROOT = Path(__file__).resolve().parents[1]


def _release(version: str) -> tuple[int, ...]:
    """``"4.45"`` and ``"4.45.0"`` compare equal, as pip's ``==`` does."""
    parts = [int(p) for p in version.split("+")[0].split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def minimum_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in EXTRAS:
        specs += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for spec in specs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9.]*)\s*(,.*)?", spec)
        if not m:
            raise SystemExit(f"pyproject.toml: {spec!r} has no plain '>=X' lower bound")
        pins[m[1]] = TORCH if m[1] == "torch" else m[2]
    pins.setdefault("torch", TORCH)
    return pins


def check(pins: dict[str, str]) -> int:
    wrong = []
    for name, want in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "missing"
        if have == "missing" or _release(have) != _release(want):
            wrong.append(f"{name}: installed {have}, wanted {want}")
    for line in wrong:
        print(f"min_requirements: {line}", file=sys.stderr)
    return 1 if wrong else 0


def main(argv: list[str]) -> int:
    pins = minimum_pins()
    if argv == ["--check"]:
        return check(pins)
    if argv:
        raise SystemExit(__doc__)
    print("\n".join(f"{name}=={version}" for name, version in pins.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
