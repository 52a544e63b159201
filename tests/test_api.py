"""The public Python API: duda.train, duda.load_model -> Segmenter, on a tiny run."""

import numpy as np
import pytest
import torch
from PIL import Image
from tinyrun import tiny_config, write_config

import duda
from duda.errors import DudaError
from duda.evaluation.predict import load_rgb, predict_label
from duda.evaluation.visualize import colorize


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    """A 2-step source-only run trained through duda.train with keyword overrides."""
    tmp = tmp_path_factory.mktemp("api")
    path = write_config(tiny_config(synth_root, tmp / "unused", method="source_only"), tmp / "cfg.yaml")
    result = duda.train(path, train__iters=2, work_dir=str(tmp / "run"))
    return result, tmp / "run"


def test_train_applies_keyword_overrides(trained):
    result, run = trained
    assert result.model_dir == run / "model" and (run / "model" / "model.json").is_file()
    assert result.step == 2 and not result.stopped_early
    assert (run / "checkpoints" / "iter_0000002.pt").is_file()
    assert not (run / "checkpoints" / "iter_0000003.pt").exists()


def test_import_duda_is_cheap_and_lists_the_api():
    import subprocess
    import sys

    code = "import duda, sys; print('torch' in sys.modules, sorted(duda.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("False")  # torch is imported on first use, not by `import duda`
    for name in ("load_model", "Segmenter", "build_model", "load_config", "train"):
        assert name in out


def test_predict_takes_paths_pil_arrays_and_batches_at_their_own_size(trained, synth_root):
    _, run = trained
    seg = duda.load_model(run / "model")
    assert isinstance(seg, duda.Segmenter) and len(seg.classes) == seg.num_classes == 19
    assert seg.palette.shape == (19, 3) and seg.palette.dtype == np.uint8
    path = sorted((synth_root / "real" / "leftImg8bit" / "val").rglob("*.png"))[0]
    rgb = load_rgb(path)
    expected = predict_label(seg.model, rgb, seg.loaded.mean, seg.loaded.std, seg.resize)
    for image in (
        path,
        str(path),
        Image.open(path),
        rgb,
        np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
    ):
        labels = seg.predict(image)
        assert labels.dtype == np.uint8 and labels.shape == rgb.shape[:2]
        np.testing.assert_array_equal(labels, expected)
    small = np.ascontiguousarray(rgb[::2, ::3])  # another size comes back at its own size
    batch = seg.predict([rgb, small])
    assert isinstance(batch, list) and batch[1].shape == small.shape[:2]
    stacked = seg.predict(np.stack([rgb, rgb[:, ::-1]]))
    assert stacked.shape == (2, *rgb.shape[:2])
    np.testing.assert_array_equal(stacked[0], expected)


def test_predict_proba_is_a_distribution_whose_argmax_is_predict(trained, synth_root):
    _, run = trained
    seg = duda.load_model(run, which="student")  # the run folder: its latest checkpoint
    path = sorted((synth_root / "real" / "leftImg8bit" / "val").rglob("*.png"))[0]
    proba = seg.predict_proba(path)
    h, w = load_rgb(path).shape[:2]
    assert proba.shape == (19, h, w) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    agree = (proba.argmax(0) == seg.predict(path)).mean()
    assert agree > 0.999  # same logits; only ties may break differently


def test_colorize_overlay_and_device(trained, synth_root):
    _, run = trained
    seg = duda.load_model(run / "model").to("cpu")
    labels = np.array([[0, 1], [255, 18]], dtype=np.uint8)
    np.testing.assert_array_equal(seg.colorize(labels), colorize(labels, seg.palette))
    assert seg.colorize(labels)[1, 0].tolist() == [0, 0, 0]
    rgb = np.full((2, 2, 3), 200, np.uint8)
    assert seg.overlay(rgb, labels, alpha=0.0).tolist() == rgb.tolist()
    assert seg.device == torch.device("cpu") and "19 classes" in repr(seg)


def test_bad_inputs_name_what_was_expected(trained, tmp_path):
    _, run = trained
    seg = duda.load_model(run / "model")
    with pytest.raises(DudaError, match="dtype float32: expected uint8"):
        seg.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(DudaError, match=r"shape \(8, 8, 5\)"):
        seg.predict(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(DudaError, match="from int: expected a file path"):
        seg.predict(3)
    with pytest.raises(DudaError, match="cannot read"):
        (tmp_path / "x.png").write_text("not an image")
        seg.predict(tmp_path / "x.png")
    with pytest.raises(DudaError, match="mode='tiles'"):
        duda.load_model(run / "model", mode="tiles")
    with pytest.raises(DudaError, match="no model found"):
        duda.load_model(tmp_path)
    with pytest.raises(DudaError, match="H×W label map"):
        seg.colorize(np.zeros((1, 2, 2), np.uint8))
