"""A tiny synthetic UDA benchmark (source in GTA layout, target in Cityscapes layout) and configs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from duda.data.prepare import prepare_dataset
    from duda.data.synth import generate_benchmark

    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(
        root, seed=0, size=(64, 128), n_source=12, n_target_train=8, n_target_val=3, domains=("real",)
    )
    prepare_dataset("gta", root / "source", progress=False, log=lambda _: None)
    prepare_dataset("cityscapes", root / "real", progress=False, log=lambda _: None)
    return root
