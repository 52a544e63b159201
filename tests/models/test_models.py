"""Shared tester: every tiny model name on tiny inputs (shape, features, grads, save/load,
pretrained loading, clear errors, bf16 autocast, channels_last)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from duda.errors import CheckpointError
from duda.models import build_from_spec, build_model, count_parameters, list_models

TINY = [n for n in list_models() if n.endswith("_tiny")]
H, W, K = 64, 96, 5


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _build(name: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_model(name, num_classes=K, **kwargs)


def _hub_layout(name: str, backbone_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's weights as a published ImageNet checkpoint would hold them (with classifier)."""
    if "mit" in name:
        state = {f"segformer.{k}": v for k, v in backbone_state.items()}  # keys start with encoder.
        state["classifier.weight"] = torch.zeros(1000, 4)
    else:
        state = dict(backbone_state)
        state["fc.weight"] = torch.zeros(1000, 4)
    return state


def test_tiny_models_are_tiny():
    assert len(TINY) == 5
    for name in TINY:
        assert 50_000 < count_parameters(build_model(name)) < 500_000, name


@pytest.mark.parametrize("name", TINY)
def test_forward_shapes_and_features(name):
    model = _build(name).eval()
    logits, feats = model(torch.randn(2, 3, H, W), return_features=True)
    s = model.output_stride
    assert s == (8 if name.startswith("deeplabv2") else 4)
    assert logits.shape == (2, K, H // s, W // s)
    assert feats.shape[:2] == (2, model.backbone.out_channels[-1])
    assert feats.shape[-1] * model.backbone.feature_strides[-1] == W


@pytest.mark.parametrize("name", TINY)
def test_backward_reaches_every_parameter(name):
    model = _build(name).train()
    model(torch.randn(2, 3, H, W)).logsumexp(1).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    assert any(p.grad.abs().sum() > 0 for p in model.head.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.backbone.parameters())


@pytest.mark.parametrize("name", TINY)
def test_state_dict_round_trip_through_spec(name, tmp_path):
    model = _build(name, seed=1).eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    rebuilt = _build_from(model.spec, seed=2).eval()
    x = torch.randn(1, 3, H, W)
    assert not torch.allclose(rebuilt(x), model(x))
    rebuilt.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(rebuilt(x), model(x))


def _build_from(spec, seed):
    torch.manual_seed(seed)
    return build_from_spec(spec)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_file_loads_backbone_only(name, suffix, tmp_path):
    donor = _build(name, seed=3)
    state = _hub_layout(name, donor.backbone.state_dict())
    path = tmp_path / f"imagenet{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    loaded = _build(name, seed=0, pretrained=str(path))
    fresh = _build(name, seed=0)
    for key, value in donor.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value), key
    changed = [
        k
        for k, v in fresh.backbone.state_dict().items()
        if not torch.equal(v, loaded.backbone.state_dict()[k])
    ]
    assert changed, "loading must change the backbone weights"
    for key, value in fresh.head.state_dict().items():
        assert torch.equal(loaded.head.state_dict()[key], value), f"head {key} must not be loaded"


@pytest.mark.parametrize("name", TINY)
def test_wrong_checkpoint_lists_missing_and_unexpected_keys(name, tmp_path):
    other = "deeplabv2_r_tiny" if "mit" in name else "segformer_mit_tiny"
    path = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in build_model(other).backbone.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError) as info:
        build_model(name, pretrained=str(path))
    msg = str(info.value)
    assert "missing keys:" in msg and "unexpected keys:" in msg and str(path) in msg


def test_checkpoint_of_other_width_reports_shape_mismatch(tmp_path):
    path = tmp_path / "b.pth"
    torch.save(build_model("segformer_mit_tiny", embed_dims=[8, 16, 32, 128]).backbone.state_dict(), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_model("segformer_mit_tiny", pretrained=str(path))


def test_uncached_hub_id_offline_gives_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        build_model("segformer_mit_tiny", pretrained="duda-tests/no-such-mit")
    msg = str(info.value)
    assert "duda-tests/no-such-mit" in msg and "hf download duda-tests/no-such-mit" in msg
    assert "HF_HUB_OFFLINE" in msg and "local" in msg


def test_missing_file_and_unreadable_file_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        build_model("segformer_mit_tiny", pretrained=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        build_model("segformer_mit_tiny", pretrained=str(bad))


@pytest.mark.parametrize("name", TINY)
def test_bf16_autocast_forward(name):
    model = _build(name).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, feats = model(torch.randn(1, 3, 32, 32), return_features=True)
    assert (
        logits.shape[1] == K and torch.isfinite(logits.float()).all() and torch.isfinite(feats.float()).all()
    )


@pytest.mark.parametrize("name", TINY)
def test_channels_last_matches_contiguous(name):
    model = _build(name).eval()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["segformer_mitb0", "deeplabv3p_r18"])
def test_real_size_small_models_forward(name):
    model = build_model(name).eval()
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, 64, 64), return_features=True)
    assert logits.shape == (1, 19, 16, 16)
    assert feats.shape[1] == 512 if name == "deeplabv3p_r18" else feats.shape[1] == 256
