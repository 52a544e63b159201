"""The ImageNet stand-in: procedural pretraining images, `duda pretrain`, shipped and cached weights."""

import json

import numpy as np
import pytest
import torch

from duda.cli import main
from duda.demo import pretrained as demo_pre
from duda.errors import CheckpointError, ConfigError
from duda.models import build_model
from duda.pretrain import (
    PRETRAIN_CLASSES,
    PretrainConfig,
    cached_pretrained,
    generate_pretrain_sample,
    pretrain_encoder,
)

TINY = {"embed_dims": [8, 8, 16, 16], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "head_channels": 8}


def _cfg(**kw) -> PretrainConfig:
    return PretrainConfig("segformer_mit_tiny", dict(TINY), **{"iters": 2, "batch_size": 2, "size": 32, **kw})


def test_samples_are_deterministic_and_cover_every_class():
    a_img, a_lbl = generate_pretrain_sample(5, seed=0, size=48)
    b_img, b_lbl = generate_pretrain_sample(5, seed=0, size=48)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lbl, b_lbl)
    assert a_img.shape == (48, 48, 3) and a_img.dtype == np.uint8 and a_lbl.shape == (48, 48)
    assert not np.array_equal(a_img, generate_pretrain_sample(5, seed=1, size=48)[0])
    seen = np.zeros(len(PRETRAIN_CLASSES), bool)
    for i in range(60):
        seen[np.unique(generate_pretrain_sample(i, 0, 48)[1])] = True
    assert seen.all()  # every texture and shape class occurs


def test_pretrain_writes_weights_that_build_model_loads(tmp_path):
    out = tmp_path / "enc.safetensors"
    record = pretrain_encoder(_cfg(), out, log=lambda _: None)
    assert out.is_file() and json.loads((tmp_path / "enc.safetensors.json").read_text()) == record
    assert record["iters"] == 2 and record["version"] >= 1 and 0 <= record["val_miou"] <= 100
    from safetensors.torch import load_file

    state = load_file(str(out))
    assert all(k.startswith("segformer.encoder.") for k in state)  # the nvidia/mit-b* layout
    model = build_model("segformer_mit_tiny", 19, pretrained=str(out), **TINY)
    for k, v in state.items():
        assert torch.equal(model.backbone.state_dict()[k.removeprefix("segformer.")], v)
    pretrain_encoder(_cfg(), tmp_path / "half.safetensors", log=lambda _: None, half=True)
    assert next(iter(load_file(str(tmp_path / "half.safetensors")).values())).dtype == torch.float16
    build_model("segformer_mit_tiny", 19, pretrained=str(tmp_path / "half.safetensors"), **TINY)


def test_cache_is_reused_only_for_the_same_recipe(tmp_path):
    out = tmp_path / "enc.safetensors"
    calls = []
    log = calls.append
    _, reused = cached_pretrained(_cfg(), out, log)
    assert not reused
    mtime = out.stat().st_mtime_ns
    _, reused = cached_pretrained(_cfg(threads=1, workers=0), out, log)  # threads/workers: same weights
    assert reused and out.stat().st_mtime_ns == mtime
    _, reused = cached_pretrained(_cfg(iters=3), out, log)
    assert not reused and json.loads((tmp_path / "enc.safetensors.json").read_text())["iters"] == 3


def test_weights_for_prefers_shipped_then_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_pre, "RECIPE", {"iters": 2, "batch_size": 2, "size": 32})
    monkeypatch.setattr(demo_pre, "shipped_dir", lambda: tmp_path / "shipped")
    monkeypatch.setattr(demo_pre, "DEMO_ENCODERS", {"t": ("segformer_mit_tiny", TINY)})
    path, seconds = demo_pre.weights_for("segformer_mit_tiny", TINY, tmp_path / "cache", lambda _: None)
    assert path == tmp_path / "cache" / "t.safetensors" and seconds > 0  # not shipped: made
    # a head of another width uses the same encoder
    other_head = {**TINY, "head_channels": 16}
    again, seconds = demo_pre.weights_for(
        "segformer_mit_tiny", other_head, tmp_path / "cache", lambda _: None
    )
    assert again == path and seconds == 0.0
    (tmp_path / "shipped").mkdir()
    for suffix in ("", ".json"):
        (tmp_path / "shipped" / f"t.safetensors{suffix}").write_bytes(
            (path.parent / f"t.safetensors{suffix}").read_bytes()
        )
    shipped, _ = demo_pre.weights_for("segformer_mit_tiny", TINY, tmp_path / "cache", lambda _: None)
    assert shipped == tmp_path / "shipped" / "t.safetensors"


def test_shipped_encoders_fit_the_demo_configs():
    """The demo configs name duda:KEY encoders; each shipped file fits its architecture."""
    from duda.config import load_config
    from duda.demo.runs import _models, configs_dir

    for name in ("daformer", "duda", "source_only", "oracle", "daformer_large"):
        cfg = load_config(str(configs_dir() / f"{name}.yaml"))
        for m in _models(cfg):
            key = m.pretrained.removeprefix("duda:")
            assert m.pretrained.startswith("duda:") and key in demo_pre.DEMO_ENCODERS
            assert demo_pre._encoder_arch(m.arch) == demo_pre._encoder_arch(demo_pre.DEMO_ENCODERS[key][1])
            build_model(m.name, 19, pretrained=m.pretrained, **m.arch)  # loads strictly


def test_unknown_shipped_name_and_bad_cli_input(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="duda:nope.*duda pretrain --demo --keys nope"):
        build_model("segformer_mit_tiny", 19, pretrained="duda:nope", **TINY)
    assert (
        main(["pretrain", "--model", "segformer_mit_tiny", "--arch", "{oops", "--out", "x.safetensors"]) == 2
    )
    assert "--arch" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=".safetensors"):
        pretrain_encoder(_cfg(), tmp_path / "w.pth", log=lambda _: None)


def test_cli_writes_a_loadable_file(tmp_path):
    out = tmp_path / "cli.safetensors"
    args = ["pretrain", "--model", "segformer_mit_tiny", "--arch", json.dumps(TINY), "--out", str(out)]
    assert main([*args, "--iters", "2", "--batch-size", "2", "--size", "32", "--workers", "0"]) == 0
    build_model("segformer_mit_tiny", 19, pretrained=str(out), **TINY)


def test_demo_encoders_missing_from_package_and_cache_are_pretrained_in_parallel(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from duda.demo import pretrained as demo_pretrained

    # a recipe of a few steps: the shipped files (made with the real recipe) then no longer match
    monkeypatch.setitem(demo_pretrained.RECIPE, "iters", 2)
    monkeypatch.setitem(demo_pretrained.RECIPE, "batch_size", 2)
    monkeypatch.setitem(demo_pretrained.RECIPE, "size", 32)
    models = [SimpleNamespace(pretrained=p) for p in ("duda:small", "duda:medium", "duda:small", None)]
    assert demo_pretrained.missing_keys(models, tmp_path) == ["small", "medium"]
    seconds = demo_pretrained.pretrain_in_parallel(["small", "medium"], tmp_path, jobs=2, log=lambda _: None)
    assert seconds > 0
    for key in ("small", "medium"):
        assert (tmp_path / f"{key}.safetensors").is_file() and (
            tmp_path / f"{key}.safetensors.json"
        ).is_file()
    assert demo_pretrained.missing_keys(models, tmp_path) == []  # both found in the cache now
