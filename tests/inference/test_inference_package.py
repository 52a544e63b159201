"""The inference package's registry of sources and the methods' network-file hook."""

from __future__ import annotations

import pytest

import duda.inference as inference
from duda.errors import CheckpointError, ConfigError
from duda.methods import base


def test_sources_are_tried_in_a_fixed_order():
    assert inference.registered_loaders() == [
        "huggingface-hub",
        "onnx",
        "deploy-folder",
        "huggingface-folder",
        "mmseg-checkpoint",
        "duda-checkpoint",
    ]


def test_a_registered_loader_is_tried_before_the_named_one(tmp_path, monkeypatch):
    monkeypatch.setattr(inference.loaders, "_LOADERS", list(inference.loaders._LOADERS))
    marker = object()
    inference.register_loader(
        "npz", lambda s: s.path.suffix == ".npz", lambda s, which: (marker, which), before="deploy-folder"
    )
    assert inference.registered_loaders().index("npz") == 2
    assert inference.load_inference_model(tmp_path / "net.npz", which="teacher") == (marker, "teacher")


def test_a_missing_file_names_itself(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        inference.load_inference_model(tmp_path / "nothing.pt")


def test_the_options_hold_the_defaults_once():
    opts = inference.InferenceOptions(crop=[256, 512])
    assert opts.crop == (256, 512) and opts.stride == inference.DEFAULT_STRIDE
    assert opts.infer_kwargs() == {
        "mode": "whole", "crop": (256, 512), "stride": (341, 341), "flip": False, "bf16": False,
    }  # fmt: skip


def test_methods_read_files_through_the_installed_provider(monkeypatch):
    assert base.network_files("x") is inference.NETWORK_FILES  # installed on import
    monkeypatch.setattr(base, "_network_files", None)
    with pytest.raises(ConfigError, match="teachers: reading networks from files needs duda.inference"):
        base.network_files("method.duda.teachers")
