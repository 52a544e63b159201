"""ONNX export: faithfulness against PyTorch, metadata round trip, rejection, predict via ONNX."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from duda import cli
from duda.deploy import onnx_export
from duda.deploy.onnx_export import ExportCheckError, export_onnx
from duda.errors import CheckpointError, DudaError
from duda.inference import load_inference_model, load_onnx_model, save_deploy_model
from duda.models import build_model
from tiny_meta import CLASSES, META


def deploy_dir(tmp_path: Path, name: str = "daformer_mit_tiny") -> Path:
    torch.manual_seed(0)
    model = build_model(name, num_classes=3).eval()
    return save_deploy_model(tmp_path / f"deploy_{name}", model, META)


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        # smooth blocks, so that predictions have structure rather than per-pixel noise
        coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


@pytest.mark.parametrize("name", ["daformer_mit_tiny", "deeplabv3p_r_tiny", "deeplabv2_r_tiny"])
def test_fixed_size_export_matches_pytorch(tmp_path, name):
    loaded = load_inference_model(deploy_dir(tmp_path, name))
    out = tmp_path / "m.onnx"
    result = export_onnx(loaded, out, 64, 96)
    assert out.is_file() and result.size_bytes == out.stat().st_size
    assert result.check.agreement == 1.0 and result.check.max_abs_diff < 1e-4
    assert result.check.inputs == 2 and result.images is None
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".onnx"] == ["m.onnx"]  # no temp file left
    runner = load_onnx_model(out).model
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 96), dtype=np.float32)
    with torch.no_grad():
        ref = loaded.model(torch.from_numpy(x)).numpy()
    got = runner(x)
    stride = loaded.model.output_stride
    assert got.shape == (1, 3, 64 // stride, 96 // stride)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    with pytest.raises(DudaError, match="fixed input 64×96"):
        runner(np.zeros((1, 3, 32, 32), dtype=np.float32))


def test_dynamic_export_works_at_two_sizes_and_keeps_metadata(tmp_path):
    loaded = load_inference_model(deploy_dir(tmp_path))
    out = tmp_path / "dyn.onnx"
    result = export_onnx(loaded, out, 64, 64, dynamic=True)
    assert result.check.inputs == 3  # two at 64×64, one at a second size
    back = load_inference_model(out)  # through the generic loader, as `duda predict` does
    assert back.model_name == "daformer_mit_tiny" and back.num_classes == 3
    assert back.classes == CLASSES
    assert back.palette.dtype == np.uint8 and back.palette.tolist() == META["palette"]
    assert back.mean == tuple(META["mean"]) and back.std == tuple(META["std"])
    assert back.resize == (96, 64)
    assert back.spec == loaded.spec and back.spec["name"] == "daformer_mit_tiny"
    runner = back.model
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 64, 128), (2, 3, 96, 64)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        with torch.no_grad():
            ref = loaded.model(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert got.shape == (shape[0], 3, shape[2] // 4, shape[3] // 4)
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_disagreeing_export_raises_and_leaves_no_file(tmp_path, monkeypatch):
    loaded = load_inference_model(deploy_dir(tmp_path, "deeplabv2_r_tiny"))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier good export")
    real_call = onnx_export.OnnxLogits.__call__
    # a broken runtime: classes rotated, so argmax disagrees almost everywhere
    monkeypatch.setattr(
        onnx_export.OnnxLogits, "__call__", lambda self, x: np.roll(real_call(self, x), 1, axis=1)
    )
    with pytest.raises(ExportCheckError, match="rejected.*was not written"):
        export_onnx(loaded, out, 64, 64)
    assert out.read_bytes() == b"an earlier good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy_deeplabv2_r_tiny", "m.onnx"]


def test_agreement_threshold_counts_pixels():
    ref = np.zeros((1, 2, 10, 100), dtype=np.float32)
    ref[:, 1] = 1.0  # class 1 everywhere
    got = ref.copy()
    got[0, 0, 0, 0] = 2.0  # one pixel of 1000 flips to class 0
    diff, same, pixels = onnx_export.compare_outputs(ref, got)
    assert (diff, same, pixels) == (2.0, 999, 1000)
    merged = onnx_export.merge_checks(
        [onnx_export.ExportCheck(0.1, 0.999, 1000, 1), onnx_export.ExportCheck(0.2, 1.0, 3000, 2)]
    )
    assert merged.agreement == pytest.approx((999 + 3000) / 4000)
    assert (merged.max_abs_diff, merged.pixels, merged.inputs) == (0.2, 4000, 3)


def test_foreign_onnx_file_is_refused(tmp_path):
    model = torch.nn.Conv2d(3, 2, 1)
    path = tmp_path / "plain.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17)
    with pytest.raises(CheckpointError, match="not a duda ONNX export"):
        load_onnx_model(path)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="onnxruntime cannot load"):
        load_onnx_model(tmp_path / "junk.onnx")


def test_cli_export_then_predict_matches_pytorch(tmp_path, capsys):
    deploy = deploy_dir(tmp_path)
    images = write_images(tmp_path / "imgs", [(48, 80), (70, 100)])
    out = tmp_path / "model.onnx"
    code = cli.main(
        ["export", str(deploy), "--out", str(out), "--dynamic", "--height", "64", "--width", "96",
         "--check-images", str(images)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "argmax agreement 100.0000%" in printed and "images:" in printed
    assert cli.main(["predict", str(deploy), str(images), "--out", str(tmp_path / "pt"), "--quiet"]) == 0
    assert cli.main(["predict", str(out), str(images), "--out", str(tmp_path / "ox"), "--quiet"]) == 0
    for name in ("img0_trainIds.png", "img1_trainIds.png"):
        a = np.array(Image.open(tmp_path / "pt" / name))
        b = np.array(Image.open(tmp_path / "ox" / name))
        assert a.shape == b.shape and (a == b).mean() >= 0.999


def test_cli_export_failure_exits_2_without_file(tmp_path, monkeypatch, capsys):
    deploy = deploy_dir(tmp_path, "deeplabv2_r_tiny")
    monkeypatch.setattr(
        onnx_export, "compare_outputs", lambda ref, got: (0.5, 0, int(ref.size // ref.shape[1]))
    )
    out = tmp_path / "bad.onnx"
    code = cli.main(["export", str(deploy), "--out", str(out), "--height", "32", "--width", "32"])
    assert code == 2 and not out.exists()
    assert "rejected" in capsys.readouterr().err
    assert cli.main(["export", str(deploy), "--out", str(tmp_path / "x.txt")]) == 2
