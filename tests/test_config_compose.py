"""Composed configs (``_base_``) and the paper configs' resolved values.

``tests/data/resolved_configs.json`` holds ``to_dict(load_config(...))`` of each of the 52 paper
configs as they were before they were rewritten into ``configs/_base_`` files plus short leaves;
every leaf must still resolve to exactly that. Regenerate it (only when a config is meant to change)
with ``python tests/test_config_compose.py --write-snapshot``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from duda.config import load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("gta2cs", "syn2cs", "cs2acdc", "cs2darkzurich")
SNAPSHOT = ROOT / "tests" / "data" / "resolved_configs.json"


def paper_configs() -> dict[str, Path]:
    return {f"{b}/{p.stem}": p for b in BENCHMARKS for p in sorted((ROOT / "configs" / b).glob("*.yaml"))}


def write_snapshot() -> None:
    resolved = {name: to_dict(load_config(str(path))) for name, path in paper_configs().items()}
    lines = [f"  {json.dumps(name)}: {json.dumps(cfg, sort_keys=True)}" for name, cfg in resolved.items()]
    SNAPSHOT.write_text(
        "{\n"
        '  "_about": "to_dict(load_config(path)) of configs/<benchmark>/<name>.yaml; written by '
        'tests/test_config_compose.py --write-snapshot",\n' + ",\n".join(lines) + "\n}\n",
        encoding="utf-8",
    )


def _snapshot() -> dict:
    data = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    data.pop("_about")
    return data


def test_snapshot_covers_every_paper_config():
    assert sorted(_snapshot()) == sorted(paper_configs())
    assert len(paper_configs()) == 52


@pytest.mark.parametrize("name", sorted(paper_configs()))
def test_paper_config_resolves_to_snapshot(name):
    assert to_dict(load_config(str(paper_configs()[name]))) == _snapshot()[name]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-snapshot"]:
        sys.exit(f"usage: python {sys.argv[0]} --write-snapshot")
    write_snapshot()
    print(f"wrote {SNAPSHOT}")
