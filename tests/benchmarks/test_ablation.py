"""benchmarks/ablation.py: every row reruns as it ran, and the tables land between the doc's markers."""

import dataclasses
import importlib.util
from pathlib import Path

from duda.config import load_config
from duda.demo.runs import RunResult, configs_dir

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation.py"


def _load():
    spec = importlib.util.spec_from_file_location("ablation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _duda(overrides=()):
    return dataclasses.asdict(load_config(str(configs_dir() / "duda.yaml"), list(overrides)).method.duda)


def test_paper_row_and_development_rows_pin_their_settings():
    ab = _load()
    paper = _duda(ab.DUDA_PAPER.overrides)
    assert paper["kd_weight"] == 0.0 and paper["stage2_lr_restart"] == 0.0
    assert paper["stage1_targets"] == paper["stage2_targets"] == "hard"
    dev = {v.key: _duda(v.overrides) for v in ab.dev_variants([*ab.DEV_ROUNDS, *ab.DEV_FULL_ROUNDS])}
    # the development baseline is the paper's stage 2 with the pre-study KD settings
    assert dev["duda"]["kd_weight"] == 0.0 and dev["duda"]["kd_temperature"] == 2.0
    assert dev["dev_kd"]["kd_temperature"] == 2.0 and dev["dev_kd"]["stage2_lr_restart"] == 0.0
    assert dev["dev_lr1"]["kd_weight"] == 0.0
    # the chosen recipe (round r3) is exactly what the project defaults give
    assert dev["dev_kd_t1_lr1"] == _duda()


def test_stage2_rows_share_the_paper_runs_stage1():
    ab = _load()
    rows = {v.key: v for v in ab.variants()}
    for key in ("duda", "abl_no_kd", "abl_no_restart", "duda_no_inconsistency", "abl_multi"):
        assert rows[key].start_from == "duda_paper", key
    assert _duda(rows["abl_no_kd"].overrides)["kd_weight"] == 0.0
    assert _duda(rows["abl_no_restart"].overrides)["stage2_lr_restart"] == 0.0
    assert {with_ for _, with_, _ in ab.PAIRS} | {without for *_, without in ab.PAIRS} <= set(rows)


def _result(run, seed, miou):
    return RunResult(run, run, "student", Path("."), seed, miou, {}, 1000)


def test_paired_table_and_doc_markers(tmp_path):
    ab = _load()
    results = [_result("duda", 0, 30.0), _result("abl_no_kd", 0, 28.0), _result("duda", 1, 29.0)]
    results += [_result("abl_no_kd", 1, 29.5)]
    table = ab.paired_table(results)
    row = next(line for line in table.splitlines() if line.startswith("| soft KD"))
    assert row.split("|")[2:6] == [" +2.0 ", " -0.5 ", " +0.75 ", " 1/2 "]
    assert "inconsistency" not in table  # pairs without runs are left out

    doc = tmp_path / "ablation.md"
    ab.write_doc(doc, "first\n")
    assert doc.read_text().count(ab.TABLE_BEGIN) == 1
    doc.write_text("prose before\n" + doc.read_text().split("\n", 2)[2] + "prose after\n")
    ab.write_doc(doc, "second\n")
    text = doc.read_text()
    assert text.startswith("prose before\n") and text.endswith("prose after\n")
    assert "second" in text and "first" not in text
