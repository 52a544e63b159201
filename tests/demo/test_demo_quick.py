"""`duda demo --quick` end to end: data generation, every run, the report."""

import json

import pytest

from duda.cli import main

pytestmark = pytest.mark.slow


def test_demo_quick_end_to_end(tmp_path, capsys):
    out, data = tmp_path / "runs", tmp_path / "data"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "| DUDA large→small (small) |" in printed and "Domain gap" in printed
    report = out / "report"
    for name in ("results.md", "results.json", "per_class.png", "curves.png", "predictions.png"):
        assert (report / name).is_file(), name
    results = json.loads((report / "results.json").read_text())
    names = [r["name"] for r in results["rows"]]
    assert names == [
        "source-only (small)",
        "DAFormer (small)",
        "DUDA large→small (small)",
        "DAFormer large (T of DUDA stage 1)",
        "oracle: target labels (small)",
    ]
    for r in results["rows"]:
        assert 0.0 <= r["miou"] <= 100.0
    stats = results["stats"]
    assert (
        stats["DAFormer large (T of DUDA stage 1)"]["params_m"]
        > 3 * stats["DUDA large→small (small)"]["params_m"]
    )
    # a second run reuses the finished runs (and the cached data) instead of training again
    assert main(["demo", "--quick", "--no-progress", "--out", str(out), "--data", str(data)]) == 0
    assert capsys.readouterr().out.count("finished earlier, reusing") == 4
