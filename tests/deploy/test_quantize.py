"""INT8 static quantization: QDQ graph, metadata, the agreement gate and its refusals, bench row."""

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from duda import cli
from duda.deploy import bench as B
from duda.deploy import quantize as Q
from duda.deploy.bench_report import inference_table, quick_options
from duda.inference import load_inference_model, save_deploy_model
from duda.models import build_model

CLASSES = ["road", "sky", "car"]
PALETTE = [[128, 64, 128], [70, 130, 180], [0, 0, 142]]
META = {
    "num_classes": 3,
    "classes": CLASSES,
    "palette": PALETTE,
    "mean": [123.675, 116.28, 103.53],
    "std": [58.395, 57.12, 57.375],
    "resize": [96, 64],  # (W, H): exports are 1×3×64×96
}


def deploy_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("segformer_mit_tiny", num_classes=3).eval()
    return save_deploy_model(tmp_path / "deploy", model, META)


def blocks(rng: np.random.Generator, h: int, w: int, cell: int = 8) -> np.ndarray:
    """Smooth random colour blocks: predictions with structure rather than per-pixel noise."""
    coarse = rng.integers(0, 256, (h // cell + 1, w // cell + 1, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((cell, cell, 1), dtype=np.uint8))[:h, :w]


def write_images(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (128, 192)) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(blocks(rng, *size)).save(folder / f"img{i}.png")
    return folder


def write_val(root: Path, count: int = 3) -> Path:
    """A folder dataset (images/, labels/, classes.yaml) with the model's 3 classes."""
    write_images(root / "images", count, seed=5)
    (root / "labels").mkdir(parents=True)
    rng = np.random.default_rng(6)
    for i in range(count):
        label = np.kron(rng.integers(0, 3, (16, 24)), np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
        Image.fromarray(label).save(root / "labels" / f"img{i}.png")
    (root / "classes.yaml").write_text(f"classes: {CLASSES}\npalette: {PALETTE}\n")
    return root


def leftovers() -> set[str]:
    """onnxruntime's own temporary folders in the system temp dir."""
    return {
        p.name
        for p in Path(tempfile.gettempdir()).iterdir()
        if p.name.startswith(("ort.quant.", "pre.quant."))
    }


def test_cli_int8_export_is_qdq_per_channel_keeps_metadata_and_reports_miou(tmp_path, capsys):
    deploy = deploy_dir(tmp_path)
    calib = write_images(tmp_path / "calib", 4)
    val = write_val(tmp_path / "val")
    out = tmp_path / "m.int8.onnx"
    before = leftovers()
    code = cli.main(
        [
            "export",
            str(deploy),
            "--out",
            str(out),
            "--quantize",
            "int8",
            "--calibration",
            str(calib),
            "--val",
            str(val),
            "--val-split",
            "train",
            "--min-agreement",
            "0.95",
        ]
    )  # fmt: skip  (a random-weight model has near-ties that int8 flips: ~98.5% here)
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "deploy", "m.int8.onnx", "val"]
    assert leftovers() <= before
    assert "calibrated on 4 images" in printed and "3 folder train images" in printed
    assert "mIoU fp32" in printed and "int8" in printed and "(required ≥ 95.00%)" in printed

    qdq = Q.qdq_summary(out)
    assert qdq.quantize > 10 and qdq.dequantize > qdq.quantize  # weights have a DequantizeLinear only
    assert qdq.weights > 5 and qdq.per_channel_weights == qdq.weights and qdq.float_ops == 0
    back = load_inference_model(out)  # as `duda predict` / `duda eval` load it
    fp32 = load_inference_model(deploy)
    assert back.model_name == "segformer_mit_tiny" and back.classes == CLASSES
    assert back.palette.tolist() == PALETTE and back.mean == tuple(META["mean"])
    assert back.std == tuple(META["std"]) and back.resize == (96, 64) and back.spec == fp32.spec
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96), dtype=np.float32)
    with torch.no_grad():
        ref = fp32.model(torch.from_numpy(x)).numpy()
    got = back.model(x)
    assert got.shape == ref.shape and (got.argmax(1) == ref.argmax(1)).mean() > 0.8

    assert cli.main(["predict", str(out), str(calib), "--out", str(tmp_path / "pred"), "--quiet"]) == 0
    assert (tmp_path / "pred" / "img0_trainIds.png").is_file()


def test_agreement_and_miou_on_a_hand_computed_case():
    a = np.array([[0, 1], [2, 2]])
    assert Q.pixel_agreement(a, np.array([[0, 1], [1, 2]])) == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        Q.pixel_agreement(a, np.zeros((2, 3)))

    # fp32 predicts class 0 left, 1 right on a 4×4 map; int8 flips the top-right 2 pixels to class 0
    fp32_logits = np.zeros((1, 2, 4, 4), dtype=np.float32)
    fp32_logits[0, 1, :, 2:] = 1.0
    int8_logits = fp32_logits.copy()
    int8_logits[0, 1, 0, 2:] = -1.0
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[:, 2:] = 1
    gt[3, :] = 255  # ignored in mIoU, counted in agreement
    x = np.zeros((1, 3, 4, 4), dtype=np.float32)
    samples = [(x, (4, 4), gt), (x, (4, 4), gt)]
    c = Q.compare_models(lambda _: fp32_logits, lambda _: int8_logits, samples, 2, "test images")
    assert (c.images, c.pixels) == (2, 32) and c.agreement == pytest.approx(28 / 32)
    # fp32 is right on all 12 labelled pixels per image; int8: class 0 IoU 6/8, class 1 IoU 4/6
    assert c.miou_fp32 == pytest.approx(1.0) and c.miou_int8 == pytest.approx((6 / 8 + 4 / 6) / 2)
    assert "87.50% over 0.00 M pixels of 2 test images" in c.summary() and "Δ -29.17" in c.summary()
    unlabelled = Q.compare_models(lambda _: fp32_logits, lambda _: fp32_logits, [(x, (8, 8), None)], 2, "x")
    assert unlabelled.agreement == 1.0 and unlabelled.pixels == 64 and unlabelled.miou_fp32 is None


def test_cli_default_threshold_is_the_library_one():
    from duda.commands import export

    assert export.INT8_DEFAULT == Q.INT8_MIN_AGREEMENT


def test_pick_evenly_and_model_input_preprocess_as_predict():
    assert Q.pick_evenly(list(range(10)), 4) == [0, 2, 5, 7] and Q.pick_evenly([1, 2], 5) == [1, 2]
    rgb = np.full((100, 300, 3), 255, dtype=np.uint8)
    x = Q.model_input(rgb, (255.0, 0.0, 0.0), (1.0, 1.0, 255.0), (96, 64))  # keep ratio: 96×32
    assert x.shape == (1, 3, 32, 96) and x.dtype == np.float32
    assert np.allclose(x[0, 0], 0) and np.allclose(x[0, 1], 255) and np.allclose(x[0, 2], 1)
    assert Q.model_input(rgb, (0, 0, 0), (1, 1, 1), (96, 64), size=(64, 96)).shape == (1, 3, 64, 96)


def test_impossible_threshold_refuses_and_leaves_no_file(tmp_path):
    loaded = load_inference_model(deploy_dir(tmp_path))
    calib = sorted(write_images(tmp_path / "calib", 2).iterdir())
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    before = leftovers()
    with pytest.raises(Q.QuantizeCheckError, match=r"rejected: argmax agreement .*below the required "
                       r"--min-agreement 101.00%\. .*m.onnx was not written"):  # fmt: skip
        Q.quantize_export(loaded, out, 64, 96, calib, min_agreement=1.01)
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "deploy", "m.onnx"]
    assert leftovers() <= before


def test_cli_refuses_a_broken_calibration_with_the_measured_agreement(tmp_path, capsys, monkeypatch):
    deploy = deploy_dir(tmp_path)
    calib = write_images(tmp_path / "calib", 2)
    val = write_val(tmp_path / "val")
    real = Q.image_feed

    def wrong_std(paths, loaded, size, name):
        # calibration images normalised with a std 100× too large: activation ranges calibrated
        # 100× too narrow, so real inputs saturate
        return Q.array_feed([x["image"] / 100 for x in real(paths, loaded, size, "image")], name)

    monkeypatch.setattr(Q, "image_feed", wrong_std)
    out = tmp_path / "bad.onnx"
    code = cli.main(
        ["export", str(deploy), "--out", str(out), "--quantize", "int8", "--calibration", str(calib),
         "--val", str(val), "--val-split", "train"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "rejected: argmax agreement int8 vs fp32" in err and "--min-agreement 98.50%" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "deploy", "val"]


def test_cli_int8_input_errors_name_the_option(tmp_path, capsys):
    deploy = deploy_dir(tmp_path)
    out = tmp_path / "m.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    calib = write_images(tmp_path / "calib", 1)
    cases = [
        (["--quantize", "int8"], "--quantize int8 needs --calibration"),
        (["--quantize", "int8", "--calibration", str(tmp_path / "nope")], "--calibration .*nope: not found"),
        (["--quantize", "int8", "--calibration", str(empty)], "empty: no images"),
        (["--calibration", str(calib)], "--calibration: only with --quantize int8"),
        (["--quantize", "int8", "--calibration", str(calib), "--val", str(empty)], "neither a Cityscapes"),
        (["--quantize", "int8", "--calibration", str(calib), "--min-agreement", "1.5"], "--min-agreement"),
    ]
    for extra, message in cases:
        assert cli.main(["export", str(deploy), "--out", str(out), *extra]) == 2, extra
        assert re.search(message, capsys.readouterr().err), message
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "deploy", "empty"]


def test_bench_has_an_int8_row(monkeypatch):
    assert "onnx-int8" in quick_options(("inference",)).backends
    monkeypatch.setattr(B, "run_isolated", lambda fn, *args: fn(*args))  # in-process: no spawn
    rows = B.bench_inference(
        ["segformer_mit_tiny"], (64, 128), ["onnx", "onnx-int8"], reps=1, threads=1, bf16_gflops=1.0,
        bf16_cap_s=60, log=lambda s: None,
    )  # fmt: skip
    assert [r.backend for r in rows] == ["onnx", "onnx-int8"]
    assert all(r.latency_s and r.latency_s > 0 for r in rows)
    assert "calibrated on 2 random-normal inputs" in rows[1].note
    assert "| segformer_mit_tiny | onnx-int8 | 64×128 |" in inference_table(rows)
