"""End-to-end runs of the shared loop on a tiny synthetic benchmark (CPU, a few steps each)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tinyrun import tiny_config, write_config

from duda.checkpoints import list_checkpoints, load_checkpoint
from duda.config import config_from_dict
from duda.engine.trainer import NonFiniteLossError, train
from duda.inference import load_inference_model

pytestmark = pytest.mark.slow


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["source_only", "daformer", "mic", "duda"])
def test_each_method_trains_evaluates_and_ships(synth_root, tmp_path, method):
    cfg = config_from_dict(
        tiny_config(synth_root, tmp_path / method, method, {"train": {"iters": 3, "debug_every": 3}})
    )
    result = train(cfg, progress=False)
    assert result.step == 3 and not result.stopped_early
    expected = {"source_only": {"student"}, "daformer": {"student", "teacher"}, "mic": {"student", "teacher"}}
    assert set(result.metrics) == expected.get(method, {"student", "teacher", "large"})
    for r in result.metrics.values():
        assert 0.0 <= r["miou"] <= 1.0 and len(r["per_class"]) == 19
    records = [json.loads(l) for l in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_recs] == [1, 2, 3]
    assert all(r["src" if method != "duda" else "small_src"] > 0 for r in train_recs)
    if method == "mic":
        assert all("mic" in r for r in train_recs)
    if method == "duda":
        assert {"small_mix", "lambda"} <= set(train_recs[0])
        assert any(r["split"] == "inconsistency" for r in records)  # logged at the start of stage 2
    assert (tmp_path / method / "debug" / "iter_0000003.png").is_file()
    shipped = load_inference_model(tmp_path / method / "model")
    assert shipped.model_name == "daformer_mit_tiny" and shipped.classes[0] == "road"
    ckpt = load_checkpoint(list_checkpoints(tmp_path / method / "checkpoints")[-1][1])
    assert torch.equal(
        ckpt["state"]["student"]["head.classifier.weight"], shipped.model.head.classifier.weight
    )


@pytest.mark.parametrize("method,stop_at", [("daformer", 2), ("duda", 1), ("duda", 3)])
def test_resume_is_bit_exact(synth_root, tmp_path, method, stop_at):
    """An interrupted run resumed from its checkpoint ends with exactly the same weights."""
    full = config_from_dict(tiny_config(synth_root, tmp_path / "full", method))
    train(full, progress=False)
    part = config_from_dict(tiny_config(synth_root, tmp_path / "part", method))
    first = train(part, progress=False, max_steps=stop_at)
    assert first.step == stop_at
    train(part, resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "iter_0000004.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "iter_0000004.pt")
    for name in a["state"]:
        assert _states_equal(a["state"][name], b["state"][name]), name
    if method == "duda":
        assert torch.equal(a["extra"]["inconsistency"], b["extra"]["inconsistency"])


def test_duda_stage2_never_updates_teachers(synth_root, tmp_path):
    cfg = config_from_dict(tiny_config(synth_root, tmp_path, "duda"))
    train(cfg, progress=False)
    ckpts = dict(list_checkpoints(tmp_path / "checkpoints"))
    end1, end2 = load_checkpoint(ckpts[2])["state"], load_checkpoint(ckpts[4])["state"]
    for frozen in ("teacher", "large"):
        assert _states_equal(end1[frozen], end2[frozen]), frozen
    assert not torch.equal(
        end1["student"]["head.classifier.weight"], end2["student"]["head.classifier.weight"]
    )
    # and stage 1 did train the large student and move the teacher
    start = load_checkpoint(ckpts[1])["state"]
    assert not torch.equal(
        start["teacher"]["head.classifier.weight"], end1["teacher"]["head.classifier.weight"]
    )
    # the per-class inconsistency report of the finished run (CLI)
    from duda.cli import main

    assert main(["inconsistency", str(tmp_path), "--out", str(tmp_path / "inc"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "inc" / "inconsistency.json").read_text())
    assert len(report["per_class"]) == 19 and report["images"] == 3
    assert (tmp_path / "inc" / "inconsistency.png").is_file()


def test_nan_loss_stops_with_last_good_checkpoint(synth_root, tmp_path, monkeypatch):
    import duda.methods.source_only as so

    real_ce, calls = so.ce, {"n": 0}

    def ce_nan_on_third(logits, labels):
        calls["n"] += 1
        loss = real_ce(logits, labels)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(so, "ce", ce_nan_on_third)
    cfg = config_from_dict(tiny_config(synth_root, tmp_path, "source_only"))
    with pytest.raises(NonFiniteLossError, match=r"step 2.*iter_0000002\.pt"):
        train(cfg, progress=False)
    steps = [s for s, _ in list_checkpoints(tmp_path / "checkpoints")]
    assert steps == [1, 2]
    assert load_checkpoint(tmp_path / "checkpoints" / "iter_0000002.pt")["step"] == 2


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} not written in {timeout}s")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_same_weights(synth_root, tmp_path, sig):
    over = {"train": {"iters": 6, "ckpt_every": 2}}
    ref = config_from_dict(tiny_config(synth_root, tmp_path / "ref", "daformer", over))
    train(ref, progress=False)
    cfg_path = write_config(
        tiny_config(synth_root, tmp_path / "run", "daformer", over), tmp_path / "run.yaml"
    )
    proc = _run_cli(["duda", "train", str(cfg_path), "--no-progress"])
    _wait_for(tmp_path / "run" / "checkpoints" / "iter_0000002.pt", proc)
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0].decode()
    if sig == signal.SIGTERM:  # 128 + 15, so `duda train ... && duda export ...` stops here
        assert proc.returncode == 143 and "checkpoint written" in out, out
        assert re.search(r"checkpoint written at step \d+: /\S+/checkpoints/iter_\d{7}\.pt", out), out
    else:
        assert proc.returncode == -signal.SIGKILL
    done = _run_cli(["duda", "train", str(cfg_path), "--no-progress", "--resume"])
    out = done.communicate(timeout=300)[0].decode()
    assert done.returncode == 0, out
    assert "resuming" in out
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "iter_0000006.pt")["state"]
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_0000006.pt")["state"]
    for name in a:
        assert _states_equal(a[name], b[name]), name


def test_two_process_ddp_gloo(synth_root, tmp_path):
    """DUDA (both stages: DDP-wrapped L and S, EMA teacher, all-reduced inconsistency) on 2 ranks."""
    cfg_path = write_config(
        tiny_config(synth_root, tmp_path / "ddp", "duda", {"train": {"iters": 3}}), tmp_path / "ddp.yaml"
    )
    proc = _run_cli(
        [
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "duda",
            "train",
            str(cfg_path),
            "--no-progress",
        ]
    )
    out = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, out
    sums = json.loads((tmp_path / "ddp" / "rank_checksums.json").read_text())
    assert len(sums) == 2 and sums[0] == sums[1]
    assert (tmp_path / "ddp" / "eval.json").is_file()
    assert [s for s, _ in list_checkpoints(tmp_path / "ddp" / "checkpoints")][-1] == 3
    assert set(sums[0]) == {"student", "large", "teacher", "imnet"}


def test_duda_soft_stage1_targets_change_only_the_small_student(synth_root, tmp_path):
    """Soft stage-1 targets: L and T are untouched (L's run is the base method's), S differs."""
    over = {"train": {"iters": 2}, "method": {"duda": {"stage1_iters": 2}}}
    base = tiny_config(synth_root, tmp_path / "base", "duda", over)
    train(config_from_dict(base), progress=False)
    soft = tiny_config(synth_root, tmp_path / "soft", "duda", over)
    soft["method"]["duda"]["stage1_targets"] = "soft"
    train(config_from_dict(soft), progress=False)
    a, b = (
        load_checkpoint(tmp_path / k / "checkpoints" / "iter_0000002.pt")["state"] for k in ("base", "soft")
    )
    for name in ("large", "teacher"):
        assert _states_equal(a[name], b[name]), name
    assert not _states_equal(a["student"], b["student"])


def test_duda_stage2_options_change_stage_2_only(synth_root, tmp_path):
    """Soft mixed targets, soft KD in stage 2 only, another source weight and an lr restart: stage 1
    ends bit-identical to the default run (so a stage-2 variant may start from its checkpoint),
    stage 2 differs, and S's logged lr restarts at the given multiple."""
    over = {"train": {"iters": 5}, "method": {"duda": {"stage1_iters": 3}}}
    base = tiny_config(synth_root, tmp_path / "base", "duda", over)
    train(config_from_dict(base), progress=False)
    variant = tiny_config(synth_root, tmp_path / "var", "duda", over)
    variant["method"]["duda"].update(
        stage2_targets="soft",
        kd_weight=1.0,
        kd_stages="stage2",
        stage2_source_weight=0.5,
        stage2_lr_restart=0.5,
    )
    train(config_from_dict(variant), progress=False)
    a, b = (dict(list_checkpoints(tmp_path / k / "checkpoints")) for k in ("base", "var"))
    end1_a, end1_b = load_checkpoint(a[3])["state"], load_checkpoint(b[3])["state"]
    for name in end1_a:
        assert _states_equal(end1_a[name], end1_b[name]), name
    assert not torch.equal(
        load_checkpoint(a[5])["state"]["student"]["head.classifier.weight"],
        load_checkpoint(b[5])["state"]["student"]["head.classifier.weight"],
    )
    recs = [json.loads(l) for l in (tmp_path / "var" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in recs if r["split"] == "train"}
    assert lr[4] == pytest.approx(0.5 * 1e-3)  # step 3 (the first of stage 2): 0.5 x lr, logged at 4
    assert lr[5] == pytest.approx(0.5 * 1e-3 * 0.5)
    assert all("kd" in r for r in recs if r["split"] == "train" and r["step"] > 3)
    assert not any("kd" in r for r in recs if r["split"] == "train" and r["step"] <= 3)
