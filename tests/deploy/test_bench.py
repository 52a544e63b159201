"""duda bench pieces, run in-process on tiny models (the spawned-process wrappers are thin)."""

import argparse

import pytest
import torch

from duda.commands.bench import NOTES_MARKER, options_from_args, write_report
from duda.deploy import bench as B
from duda.deploy.bench_report import BenchOptions, render_markdown, train_findings
from duda.errors import ConfigError, DudaError
from duda.methods import config_from_dict

TINY = B.TrainSetup(
    large="daformer_mit_tiny", small="segformer_mit_tiny", crop=(32, 32), batch=2, num_classes=19
)


def test_random_batch_has_the_training_batch_contract():
    batch = B.random_batch(TINY)
    assert batch["src_img"].shape == (2, 3, 32, 32) and batch["tgt_img"].dtype == torch.float32
    assert batch["src_gt"].dtype == torch.long and batch["src_gt"].shape == (2, 32, 32)
    assert set(batch["src_gt"].unique().tolist()) <= set(range(19)) | {255}
    assert (batch["src_gt"][:, :4] == 255).all() and (batch["tgt_gt"] == 255).all()
    assert batch["tgt_valid"][:, 0].sum() == 0 and batch["tgt_valid"][:, 5:].min() == 1


@pytest.mark.parametrize("case", B.train_case_names())
def test_experiment_dict_builds_a_valid_config(case):
    cfg = config_from_dict(B.experiment_dict(case, TINY, bf16=False))
    if case.startswith("duda"):
        assert cfg.method.name == "duda" and cfg.model.name == "segformer_mit_tiny"
        assert cfg.method.duda.large.name == "daformer_mit_tiny" and cfg.method.duda.stage1_iters == 5
    else:
        assert cfg.method.name == case and cfg.model.name == "daformer_mit_tiny"
    if "hrda" in case:  # twice the crop, a detail crop of the setup's crop (HRDA vs DAFormer)
        assert cfg.data.crop_size == (64, 64) and cfg.method.hrda.hr_crop_size == (32, 32)
    else:
        assert cfg.data.crop_size == (32, 32)
    assert cfg.train.bf16 is False


@pytest.mark.parametrize("case", ["duda-stage1", "duda-stage2", "mic_hrda"])
def test_train_case_counts_flops_and_checks_frozen_networks(case):
    out = B._train_case(case, TINY, bf16=False, reps=1, threads=1, count=True)
    assert len(out["times"]) == 1 and out["times"][0] > 0
    assert out["flops"] > 0 and out["peak_mb"] >= out["delta_mb"] >= 0
    assert "requires_grad False" in out["frozen"] and "under no_grad" in out["frozen"]
    student = "daformer_mit_tiny" if case == "mic_hrda" else "segformer_mit_tiny"
    assert f"student={student}" in out["networks"]
    assert "teacher=daformer_mit_tiny (frozen)" in out["networks"]


def test_frozen_report_flags_a_teacher_that_runs_with_gradients():
    class Fake:
        networks = {"teacher": torch.nn.Linear(2, 2)}

    static, after = B.frozen_report(Fake())
    assert "requires_grad TRUE on ['teacher']" in static
    Fake.networks["teacher"](torch.zeros(1, 2))  # grad mode on: must be reported
    assert "GRAD ENABLED in forward of ['teacher']" in after()


def test_inference_torch_case_runs_and_bf16_is_skipped_by_estimate():
    out = B._inference_torch("deeplabv3p_r_tiny", (32, 64), "torch-fp32-cl", reps=2, threads=1)
    assert len(out["times"]) == 2 and min(out["times"]) > 0
    rows = B.bench_inference(
        ["daformer_mitb5"], (512, 1024), ["torch-bf16"], reps=1, threads=1, bf16_gflops=0.5, bf16_cap_s=60,
        log=lambda s: None,
    )  # fmt: skip
    (row,) = rows
    assert row.latency_s is None and row.gflop > 500  # MiT-B5 + DAFormer head at 512×1024: 546 GFLOP
    assert row.note == f"skipped (would take ≈ {row.gflop / 0.5:.0f} s per image at 0.50 GFLOP/s)"


def fake_report() -> dict:
    train = [
        B.TrainRow("daformer", "fp32", "n", step_s=2.0, peak_mb=1000, delta_mb=400, gflop=100, gflops=50,
                   frozen_ok="requires_grad False; forwards of teacher+imnet under no_grad"),
        B.TrainRow("duda-stage1", "fp32", "n", step_s=2.4, peak_mb=1200, delta_mb=500, gflop=120, gflops=50),
        B.TrainRow("duda-stage2", "fp32", "n", step_s=0.5, peak_mb=900, delta_mb=100, gflop=10, gflops=20),
        B.TrainRow("daformer", "bf16", "", note="skipped (would take ≈ 333 s per step at 0.30 GFLOP/s)"),
    ]  # fmt: skip
    inference = [
        B.InferenceRow("daformer_mitb0", "torch-fp32", (512, 1024), 0.5, 2.0, 700, 300, 243.5),
        B.InferenceRow("daformer_mitb0", "onnx", (512, 1024), 0.25, 4.0, 500, 200, 243.5),
    ]
    return {
        "command": "duda bench", "date": "2026-01-01T00:00:00",
        "machine": {"cpu": "Test CPU", "cores": 2, "simd": "avx2", "torch": "2.x", "onnxruntime": "1.x",
                    "python": "3.11", "threads": 2, "gpu": "none"},
        "load_before": (3.0, 3.0, 3.0), "load_after": (0.1, 0.1, 0.1), "options": BenchOptions(),
        "peak": {"fp32": 100.0, "bf16": 0.3}, "train": train, "inference": inference,
    }  # fmt: skip


def test_render_markdown_reports_ratios_shares_and_sharing():
    md = render_markdown(fake_report())
    assert "Test CPU, 2 cores (avx2)" in md and "the machine was shared" in md
    assert "| daformer_mitb0 | onnx | 512×1024 | 243.5 | 0.250 | 4.00 | 2.00× | 500 | 200 |  |" in md
    assert "| daformer | fp32 | 2.00 | 100.0 | 50.0 | 50% | 1000 | 400 |  |" in md
    assert "| daformer | bf16 | — | — | — | — | — | — | skipped" in md
    findings = train_findings(fake_report()["train"])
    assert findings[0].startswith("DUDA stage-1 step / large-model DAFormer step = 1.20× in time (meets")
    assert "1.20× in peak memory (Δ 500 vs 400 MB); FLOPs 1.20×" in findings[0]
    assert findings[1] == "DUDA stage-2 step = 0.25× the large DAFormer step in time."
    noisy = fake_report()["train"]
    noisy[0].step_s = 100.0  # 50x slower for the same FLOPs: contention, not the method
    assert "0.02× in time (NOT COMPARABLE (FLOP ratio 1.20×" in train_findings(noisy)[0]


def test_write_report_keeps_notes(tmp_path):
    path = tmp_path / "perf.md"
    write_report(str(path), "# first\n")
    assert path.read_text() == "# first\n\n" + NOTES_MARKER + "\n"
    path.write_text(path.read_text() + "my analysis\n")
    write_report(str(path), "# second\n")
    assert path.read_text() == "# second\n\n" + NOTES_MARKER + "\nmy analysis\n"


def bench_args(**kw) -> argparse.Namespace:
    names = [
        "only",
        "threads",
        "reps",
        "models",
        "size",
        "backends",
        "large",
        "small",
        "crop",
        "batch",
        "cases",
        "bf16_cap",
    ]
    base = {**dict.fromkeys(names), "quick": True, "no_profile": False}
    base.update(kw)
    return argparse.Namespace(**base)


def test_options_from_args_applies_flags_and_rejects_bad_names():
    opts = options_from_args(bench_args(only=["train"], reps=2, crop=[48, 64], large="daformer_mit_tiny"))
    assert opts.sections == ("train",) and opts.reps == 2 and opts.train.crop == (48, 64)
    assert opts.threads == 1 and opts.inference_models == ["daformer_mit_tiny", "deeplabv3p_r_tiny"]
    with pytest.raises(DudaError, match="--backends: unknown \\['gpu'\\]"):
        options_from_args(bench_args(backends=["gpu"]))
    with pytest.raises(ConfigError, match="model 'mitb9': unknown"):
        options_from_args(bench_args(models=["mitb9"]))
    with pytest.raises(DudaError, match="--reps must be at least 1"):
        options_from_args(bench_args(reps=0))


def test_loader_bench_runs_from_the_package():
    """The loader section needs no source checkout (its helpers ship in duda.deploy)."""
    import math

    from duda.deploy.bench import bench_loader

    r = bench_loader(images=2, workers=0, batches=2, batch=1, crop=64)
    assert not r.note and math.isfinite(r.samples_per_s) and r.samples_per_s > 0


def _die():
    import os

    os._exit(9)


def _fail():
    raise ValueError("bad case")


def test_run_isolated_reports_a_dead_process_instead_of_hanging():
    from duda.deploy.bench import IsolatedCaseDied, run_isolated

    with pytest.raises(IsolatedCaseDied, match="exit code 9"):
        run_isolated(_die)
    with pytest.raises(ValueError, match="bad case"):
        run_isolated(_fail)
