"""Parameter groups as DAFormer's runs build them (experiments.py + mmcv 1.3.7).

experiments.py: ``custom_keys = {"head": lr_mult 10}``, plus ``{"pos_block": decay_mult 0,
"norm": decay_mult 0}`` only when the backbone name contains ``mit``; schedules/adamw.py:
``weight_decay=0.01``. mmcv's DefaultOptimizerConstructor gives each parameter the first custom
key contained in its name, keys sorted longest first, and no other rule (no norm_decay_mult,
no bias_decay_mult). The expected values below apply that rule by hand to the parameter names:
the project names its decode head ``head.*`` and every MiT LayerNorm module contains ``norm``
(``layer_norm``, ``layernorm_before``/``after``), as the reference's ``norm1``/``attn.norm`` do.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from duda.engine.optim import backbone_family, build_optimizer, param_groups
from duda.errors import ConfigError
from duda.models import build_model

LR, WD, HEAD_MULT = 6e-5, 0.01, 10.0
MIT_KEYS = (("pos_block", 1.0, 0.0), ("head", 10.0, 1.0), ("norm", 1.0, 0.0))  # longest first
RESNET_KEYS = (("head", 10.0, 1.0),)


def _mmcv_rule(name: str, keys) -> tuple[float, float]:
    """(lr, weight decay) of parameter ``name`` under mmcv's custom_keys."""
    for key, lr_mult, decay_mult in keys:
        if key in name:
            return LR * lr_mult, WD * decay_mult
    return LR, WD


def _by_name(model: nn.Module) -> dict[str, tuple[float, float]]:
    ids = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in param_groups(model, LR, WD, HEAD_MULT):
        for p in group["params"]:
            out[ids[id(p)]] = (group["lr"], group["weight_decay"])
    return out


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("daformer_mit_tiny", MIT_KEYS),
        ("segformer_mit_tiny", MIT_KEYS),
        ("deeplabv2red_r_tiny", RESNET_KEYS),
        ("deeplabv2_r_tiny", RESNET_KEYS),
        ("deeplabv3p_r_tiny", RESNET_KEYS),
    ],
)
def test_every_parameter_gets_the_reference_lr_and_decay(name, keys):
    model = build_model(name, num_classes=5)
    got = _by_name(model)
    assert sorted(got) == sorted(n for n, _ in model.named_parameters())
    wrong = {n: (v, _mmcv_rule(n, keys)) for n, v in got.items() if v != pytest.approx(_mmcv_rule(n, keys))}
    assert wrong == {}


def test_daformer_head_batchnorm_decays_with_head_lr():
    """Item 5: decode-head BN parameters get lr × 10 and weight decay 0.01 (was 0)."""
    model = build_model("daformer_mit_tiny", num_classes=5)
    got = _by_name(model)
    bn_names = {
        f"head.{mod_name}.{p}"
        for mod_name, m in model.head.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in ("weight", "bias")
    }
    # tiny DAFormer head: 4 ASPP branches (1×1: 1 BN; 3 separable: 2 BN each) + bottleneck = 8 BN
    assert len(bn_names) == 2 * 8
    for n in bn_names:
        assert got[n] == pytest.approx((6e-4, 0.01)), n
    assert got["head.fuse.branches.1.0.1.weight"] == pytest.approx((6e-4, 0.01))
    assert got["head.classifier.bias"] == pytest.approx((6e-4, 0.01))


def test_mit_backbone_norms_do_not_decay(mit_name):
    model = build_model("daformer_mit_tiny", num_classes=5)
    got = _by_name(model)
    s = "backbone.encoder.stages"  # transformers 5.x names; mit_name gives the installed ones
    assert got[mit_name(f"{s}.0.layer_norm.weight")] == (LR, 0.0)
    assert got[mit_name(f"{s}.1.blocks.0.layernorm_before.bias")] == (LR, 0.0)
    assert got[mit_name(f"{s}.0.patch_embeddings.layer_norm.weight")] == (LR, 0.0)
    assert got[mit_name(f"{s}.2.blocks.0.attention.sequence_reduction.layer_norm.bias")] == (LR, 0.0)
    assert got[mit_name(f"{s}.0.blocks.0.attention.q_proj.bias")] == (LR, WD)
    assert got[mit_name(f"{s}.0.patch_embeddings.proj.weight")] == (LR, WD)
    # tiny MiT (depths 1,1,1,1; sr 8,4,2,1): 4 patch + 4 block×2 + 4 stage + 3 SR LayerNorms
    assert sum(1 for v in got.values() if v[1] == 0.0) == 2 * (4 + 8 + 4 + 3)


def test_resnet_batchnorm_decays():
    """Item 10: no norm rule for ResNet backbones: every BN parameter decays (was 0)."""
    model = build_model("deeplabv2red_r_tiny", num_classes=5)
    got = _by_name(model)
    assert got["backbone.stem.1.weight"] == (LR, WD)
    assert got["backbone.layer1.0.bn3.bias"] == (LR, WD)
    assert got["backbone.layer4.0.downsample.1.weight"] == (LR, WD)
    assert got["head.branches.1.weight"] == pytest.approx((6e-4, WD))
    assert all(wd == WD for _, wd in got.values())
    groups = param_groups(model, LR, WD, HEAD_MULT)
    assert [g["name"] for g in groups] == ["backbone", "head"]


def test_family_from_the_backbone_and_explicit():
    assert backbone_family(build_model("segformer_mit_tiny")) == "mit"
    assert backbone_family(build_model("deeplabv3p_r_tiny")) == "resnet"
    toy = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    assert backbone_family(toy) == "other"
    # "other" is the reference's non-MiT case: everything decays; "mit" can be asked for
    assert all(g["weight_decay"] == WD for g in param_groups(toy, LR, WD, HEAD_MULT))
    nd = [g for g in param_groups(toy, LR, WD, HEAD_MULT, family="mit") if g["weight_decay"] == 0.0]
    assert [len(g["params"]) for g in nd] == [2]
    with pytest.raises(ConfigError, match="family='vit'"):
        param_groups(toy, LR, WD, HEAD_MULT, family="vit")


def test_build_optimizer_uses_the_groups():
    opt = build_optimizer(build_model("deeplabv2red_r_tiny", num_classes=5), LR, WD, HEAD_MULT)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([LR, 6e-4])
    assert [g["weight_decay"] for g in opt.param_groups] == [WD, WD]
