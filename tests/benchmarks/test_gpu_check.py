"""benchmarks/gpu_check.py --dry-run: the prepared GPU script runs end to end on the CPU."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_prints_one_row_per_case_and_precision(capsys):
    assert _load().main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith(("| case", "| model"))]
    cases = {line.split("|")[1].strip() for line in rows}
    assert {"daformer", "duda-stage1", "duda-stage2", "SegFormer tiny", "DAFormer tiny"} <= cases
    train_rows = [r for r in rows if r.split("|")[1].strip().startswith(("daformer", "duda", "hrda"))]
    assert len(train_rows) == 3 * len({r.split("|")[1] for r in train_rows})  # fp32, tf32, bf16 each
    for r in rows:
        cell = r.split("|")[3].strip()
        assert cell == "out of memory" or float(cell) > 0


def test_without_a_gpu_it_refuses_clearly(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert _load().main([]) == 2
    assert "--dry-run" in capsys.readouterr().err
