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
        "DAFormer large (L of DUDA stage 1)",
        "DUDA without inconsistency weights (small)",
        "oracle: target labels (small)",
    ]
    for name in ("fig4a_inconsistency.png", "fig4b_inconsistency_gain.png"):
        assert (report / name).is_file(), name
    for r in results["rows"]:
        assert 0.0 <= r["miou"] <= 100.0
    stats = results["stats"]
    assert (
        stats["DAFormer large (L of DUDA stage 1)"]["params_m"]
        > 20 * stats["DUDA large→small (small)"]["params_m"]
    )
    # a second run reuses the finished runs (and the cached data) instead of training again
    assert main(["demo", "--quick", "--no-progress", "--out", str(out), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier, reusing") == 5
    assert "where the time went" in printed and "seed 0: duda" in printed


def test_demo_baselines_only_seed_selection(tmp_path, capsys):
    out, data = tmp_path / "runs", tmp_path / "data"
    args = ["demo", "--quick", "--baselines", "--no-progress", "--out", str(out), "--data", str(data)]
    assert main([*args, "--seeds", "2", "--only-seeds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| DAFormer large |" in printed and "DAFormer large − DAFormer small" in printed
    assert (out / "seed1" / "daformer_large" / "eval.json").is_file() and not (out / "seed0").exists()
    assert main([*args, "--seeds", "2", "--only-seeds", "2"]) == 2  # out of range: a clear error
