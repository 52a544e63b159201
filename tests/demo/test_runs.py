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
    # runs trained in parallel processes give the same bits; the stage-2 variant waits for the
    # run whose stage-1 checkpoint it starts from
    out2 = tmp_path / "runs_parallel"
    runs = "duda_no_inconsistency,duda,oracle"
    args = ["demo", "--quick", "--no-progress", "--jobs", "2", "--only-runs", runs, "--out", str(out2)]
    assert main([*args, "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "runs (wall, 2 at once)" in printed
    for run in runs.split(","):
        assert (out2 / "seed0" / f"{run}.log").is_file()
        first = json.loads((out / "seed0" / run / "eval.json").read_text())
        assert json.loads((out2 / "seed0" / run / "eval.json").read_text()) == first, run


def test_demo_baselines_only_seed_selection(tmp_path, capsys):
    out, data = tmp_path / "runs", tmp_path / "data"
    args = ["demo", "--quick", "--baselines", "--no-progress", "--out", str(out), "--data", str(data)]
    assert main([*args, "--seeds", "2", "--only-seeds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| DAFormer large |" in printed and "DAFormer large − DAFormer small" in printed
    assert (out / "seed1" / "daformer_large" / "eval.json").is_file() and not (out / "seed0").exists()
    assert main([*args, "--seeds", "2", "--only-seeds", "2"]) == 2  # out of range: a clear error


def test_parallel_runs_report_a_failing_run_with_its_log(tmp_path):
    """A run that fails in its own process is reported by the demo with the run's error and log."""
    from duda.demo.runs import DAFORMER, QUICK, SOURCE_ONLY, _Task, _train_in_parallel, run_config
    from duda.errors import DudaError

    missing = tmp_path / "no_such_data"
    roots = {"source": missing / "source", "real": missing / "real"}
    tasks = []
    for variant in (SOURCE_ONLY, DAFORMER):
        cfg = run_config(variant, roots, "real", tmp_path / "out", 0, QUICK)
        cfg.model.pretrained = None
        log_file = tmp_path / "out" / "seed0" / f"{variant.key}.log"
        tasks.append(_Task(0, variant, cfg, tmp_path / "out" / "seed0" / variant.key, log_file))
    lines = []
    with pytest.raises(DudaError, match="no_such_data") as err:
        _train_in_parallel(tasks, [0, 1], 2, {}, {}, lines.append)
    assert "source_only.log" in str(err.value) and "daformer.log" in str(err.value)
    assert "Traceback" in (tmp_path / "out" / "seed0" / "source_only.log").read_text()
    assert len([line for line in lines if "training" in line]) == 2
