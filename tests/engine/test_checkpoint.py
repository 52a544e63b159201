import numpy as np
import pytest
import torch

from duda.checkpoints import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from duda.errors import CheckpointError
from duda.inference import load_inference_model, save_deploy_model
from duda.models import build_model


def test_keep_last_and_latest(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.ones(2) * step}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "iter_0000040.pt"
    assert load_checkpoint(latest)["w"].tolist() == [40.0, 40.0]
    assert not list(tmp_path.glob("*.tmp"))


def test_unreadable_checkpoint_is_named(tmp_path):
    bad = tmp_path / "iter_0000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="iter_0000001.pt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class Evil:
    """An arbitrary Python object: weights_only loading must refuse to build it."""


def test_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "iter_0000002.pt"
    torch.save({"obj": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_deploy_round_trip(tmp_path):
    model = build_model("segformer_mit_tiny", num_classes=3).eval()
    meta = {
        "classes": ["a", "b", "c"],
        "palette": np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
        "mean": [1.0, 2.0, 3.0],
        "std": [1.0, 1.0, 1.0],
        "resize": [64, 32],
    }
    save_deploy_model(tmp_path / "model", model, meta)
    loaded = load_inference_model(tmp_path / "model")
    assert loaded.classes == ["a", "b", "c"] and loaded.resize == (64, 32)
    assert loaded.palette.dtype == np.uint8 and loaded.palette[2].tolist() == [7, 8, 9]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))


def test_missing_model_folder_error(tmp_path):
    with pytest.raises(CheckpointError, match="no model found"):
        load_inference_model(tmp_path)
