"""Parity with the DAFormer/MIC reference models (mmseg 0.16 on mmcv 1.3.7).

Expected values are written from the reference's rules, not from the project's code:
- mmcv ConvModule: conv ``kaiming_normal_(fan_out, relu)`` → std sqrt(2 / fan_out), fan_out =
  out_channels × kernel area; bias 0; BN weight 1, bias 0;
- mmseg BaseDecodeHead ``conv_seg``: N(0, 0.01), bias 0;
- ``nn.Linear`` embeddings (mmseg MLP) and SegFormerHead's ``linear_pred``: PyTorch default,
  weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) → weight std 1/sqrt(3 fan_in);
- mmseg MiT LayerNorm eps: 1e-6 for block and stage norms, 1e-5 for patch-embedding and
  spatial-reduction norms;
- DAFormer ``deeplabv2red`` + ``r101v1c``: ResNetV1c (deep stem, contract_dilation), DLV2 head
  with dilations (6, 12), N(0, 0.01) ASPP convs.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from duda.errors import CheckpointError, ConfigError
from duda.models import build_model, count_parameters
from duda.models import heads as H
from duda.models.mit import MiTArch, MiTBackbone, set_reference_layer_norm_eps
from duda.models.pretrained import resnet_v1c_key, resnet_v1c_to_backbone

MIT_B0_DIMS = (32, 64, 160, 256)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _assert_kaiming_fan_out(conv: nn.Conv2d, out_channels: int, kernel: int) -> None:
    """std within 5 % of sqrt(2 / (out × k × k)), normal (not uniform) tails, no bias."""
    w = conv.weight.detach()
    expected = math.sqrt(2.0 / (out_channels * kernel * kernel))
    assert w.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(w.mean().item()) < 0.05 * expected
    # a normal sample of this size has values beyond 3 std; a uniform one stops at sqrt(3) std
    assert w.abs().max().item() > 3.0 * expected
    assert conv.bias is None or torch.count_nonzero(conv.bias) == 0


def _assert_bn_one_zero(bn: nn.BatchNorm2d) -> None:
    assert torch.equal(bn.weight.detach(), torch.ones_like(bn.weight))
    assert torch.equal(bn.bias.detach(), torch.zeros_like(bn.bias))


def _assert_torch_default(layer: nn.Conv2d, fan_in: int) -> None:
    """PyTorch's default Linear / Conv init: U(±1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)
    w = layer.weight.detach()
    assert w.abs().max().item() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.05)
    assert layer.bias.abs().max().item() <= bound and torch.count_nonzero(layer.bias) > 0


def _assert_conv_seg(conv: nn.Conv2d) -> None:
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


# ----------------------------------------------------------------------------- item 3: head init


def test_daformer_head_init_follows_convmodule_and_conv_seg_rules():
    c = 256  # DAFormer's channels; fused input 4 × 256 = 1024 channels
    head = H.DAFormerHead(MIT_B0_DIMS, 19, channels=c, dilations=(1, 6, 12, 18))
    one_by_one, *separable = head.fuse.branches
    _assert_kaiming_fan_out(one_by_one[0], c, 1)  # dilation-1 branch: 1×1 ConvModule 1024→256
    _assert_bn_one_zero(one_by_one[1])
    for branch in separable:
        depthwise, pointwise = branch[0], branch[1]
        assert depthwise[0].weight.shape == (4 * c, 1, 3, 3)
        _assert_kaiming_fan_out(depthwise[0], 4 * c, 3)  # std sqrt(2 / 9216) = 0.0147
        _assert_kaiming_fan_out(pointwise[0], c, 1)  # std sqrt(2 / 256) = 0.0884
        _assert_bn_one_zero(depthwise[1])
        _assert_bn_one_zero(pointwise[1])
    _assert_kaiming_fan_out(head.fuse.bottleneck[0], c, 3)  # 3×3 on 1024 → 256
    _assert_bn_one_zero(head.fuse.bottleneck[1])
    _assert_conv_seg(head.classifier)  # was PyTorch default, std 1/sqrt(768) = 0.036
    for embed, cin in zip(head.embed, MIT_B0_DIMS, strict=True):  # mmseg MLP: nn.Linear default
        _assert_torch_default(embed, cin)


def test_segformer_head_init_follows_the_reference_segformer_head():
    c = 256
    head = H.SegFormerHead(MIT_B0_DIMS, 19, channels=c)
    _assert_kaiming_fan_out(head.fuse[0], c, 1)  # linear_fuse ConvModule
    _assert_bn_one_zero(head.fuse[1])
    # The reference's classifier is linear_pred (a plain nn.Conv2d); conv_seg's N(0, 0.01) rule
    # targets an unused module, so the classifier keeps PyTorch's default.
    _assert_torch_default(head.classifier, c)
    for embed, cin in zip(head.embed, MIT_B0_DIMS, strict=True):
        _assert_torch_default(embed, cin)


def test_deeplabv3plus_head_uses_the_convmodule_rule():
    c, skip = 128, 48
    head = H.DeepLabV3PlusHead((64, 128, 256, 512), 19, channels=c, skip_channels=skip)
    _assert_kaiming_fan_out(head.aspp[0][0], c, 1)
    for branch in head.aspp[1:]:
        _assert_kaiming_fan_out(branch[0][0], 512, 3)  # depthwise on the 512-channel last stage
        _assert_kaiming_fan_out(branch[1][0], c, 1)
    _assert_kaiming_fan_out(head.pool.conv, c, 1)  # conv + ReLU, with a bias set to 0
    _assert_kaiming_fan_out(head.aspp_project[0], c, 1)
    _assert_kaiming_fan_out(head.skip[0], skip, 1)
    _assert_kaiming_fan_out(head.decode[0][0][0], c + skip, 3)
    _assert_kaiming_fan_out(head.decode[1][1][0], c, 1)
    for m in head.modules():
        if isinstance(m, nn.BatchNorm2d):
            _assert_bn_one_zero(m)
    _assert_conv_seg(head.classifier)


@pytest.mark.parametrize("dilations", [(6, 12, 18, 24), (6, 12)])
def test_deeplabv2_head_keeps_normal_001(dilations):
    head = H.DeepLabV2Head(2048, 19, dilations)
    assert [b.dilation for b in head.branches] == [(d, d) for d in dilations]
    assert [b.padding for b in head.branches] == [(d, d) for d in dilations]
    for conv in head.branches:
        _assert_conv_seg(conv)


def test_built_models_carry_the_head_init():
    model = build_model("daformer_mitb0")
    _assert_conv_seg(model.head.classifier)
    _assert_kaiming_fan_out(model.head.fuse.branches[1][0][0], 1024, 3)


# ----------------------------------------------------------------------------- item 7: LayerNorm eps


def test_mit_layer_norm_eps_by_module_name(mit_name):
    # depths (2, 1, 1, 1), sr_ratios (8, 4, 2, 1): the last stage has no spatial reduction.
    arch = MiTArch(embed_dims=(8, 16, 32, 64), depths=(2, 1, 1, 1), num_heads=(1, 1, 2, 4))
    backbone = MiTBackbone(arch)
    expected = {}
    for s, depth in enumerate(arch.depths):
        expected[f"encoder.stages.{s}.patch_embeddings.layer_norm"] = 1e-5  # OverlapPatchEmbed.norm
        for b in range(depth):
            block = f"encoder.stages.{s}.blocks.{b}"
            expected[f"{block}.layernorm_before"] = 1e-6  # Block.norm1
            expected[f"{block}.layernorm_after"] = 1e-6  # Block.norm2
            if s < 3:
                expected[f"{block}.attention.sequence_reduction.layer_norm"] = 1e-5  # Attention.norm
        expected[f"encoder.stages.{s}.layer_norm"] = 1e-6  # MixVisionTransformer.norm{s+1}
    expected = {mit_name(n): eps for n, eps in expected.items()}  # transformers 4.x: block.* names
    found = {n: m.eps for n, m in backbone.named_modules() if isinstance(m, nn.LayerNorm)}
    assert found == expected
    assert len(found) == 4 + 2 * 5 + 4 + 4  # 4 patch, 2 per block (5 blocks), 4 stage, 4 SR norms


def test_mit_b0_eps_counts():
    eps = [m.eps for m in build_model("daformer_mitb0").backbone.modules() if isinstance(m, nn.LayerNorm)]
    # B0: 8 blocks → 16 block norms + 4 stage norms at 1e-6; 4 patch norms + 6 SR norms (sr > 1 in
    # stages 1–3, 2 blocks each) at 1e-5.
    assert (eps.count(1e-6), eps.count(1e-5), len(eps)) == (20, 10, 30)


def test_unknown_layer_norm_name_is_an_error():
    odd = nn.Module()
    odd.encoder = nn.Module()
    odd.encoder.extra_norm = nn.LayerNorm(4)
    with pytest.raises(ValueError, match="encoder.extra_norm"):
        set_reference_layer_norm_eps(odd)


# ------------------------------------------------------------------------------- MiT attention path


def test_mit_fused_attention_matches_eager(monkeypatch):
    """transformers 5.x: MiT runs PyTorch's fused attention, with the eager path's result. The 4.x
    SegFormer has only the eager path (4.57 refuses a request for "sdpa"), which MiT then asks for."""
    from transformers import SegformerModel

    fused = getattr(SegformerModel, "_supports_sdpa", False)
    arch = MiTArch(embed_dims=(8, 16, 32, 64), depths=(2, 1, 1, 1), num_heads=(1, 1, 2, 4))
    backbone = MiTBackbone(arch).eval()
    assert backbone.encoder.config._attn_implementation == ("sdpa" if fused else "eager")
    eager = copy.deepcopy(backbone)
    eager.encoder.config._attn_implementation = "eager"

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = backbone(x)
        assert len(calls) == (5 if fused else 0)  # one call per block (5 blocks)
        reference = eager(x)
        assert len(calls) == (5 if fused else 0)  # the eager copy makes none
    for a, b in zip(out, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ item 11: DeepLabV2 (UDA literature)


def test_deeplabv2red_r101_architecture():
    with torch.device("meta"):
        model = build_model("deeplabv2red_r101")
    bb = model.backbone
    stem = [(type(m).__name__, getattr(m, "stride", None)) for m in bb.stem]
    assert stem == [
        ("Conv2d", (2, 2)),
        ("BatchNorm2d", None),
        ("ReLU", None),
        ("Conv2d", (1, 1)),
        ("BatchNorm2d", None),
        ("ReLU", None),
        ("Conv2d", (1, 1)),
        ("BatchNorm2d", None),
        ("ReLU", None),
    ]
    assert [tuple(bb.stem[i].weight.shape) for i in (0, 3, 6)] == [
        (32, 3, 3, 3),
        (32, 32, 3, 3),
        (64, 32, 3, 3),
    ]
    assert not hasattr(bb, "conv1")
    # mmseg 'pytorch' style: the stride sits in the 3×3 conv
    assert bb.layer2[0].conv1.stride == (1, 1) and bb.layer2[0].conv2.stride == (2, 2)
    # contract_dilation: first block of layer3 dilation 2 // 2 = 1, of layer4 4 // 2 = 2
    assert [blk.conv2.dilation[0] for blk in bb.layer3] == [1] + [2] * 22
    assert [blk.conv2.dilation[0] for blk in bb.layer4] == [2, 4, 4]
    assert [blk.conv2.padding[0] for blk in bb.layer4] == [2, 4, 4]
    assert [b.dilation[0] for b in model.head.branches] == [6, 12]
    assert model.output_stride == 8
    # torchvision resnet101: 44,549,160 parameters, of which fc 2048 × 1000 + 1000; the V1c stem
    # (3·32·9 + 32·32·9 + 32·64·9 convs + BN 2·(32 + 32 + 64)) replaces 3·64·49 + 2·64; two ASPP
    # convs 2048 → 19 (3×3, bias).
    backbone = 44_549_160 - (2048 * 1000 + 1000) - (3 * 64 * 49 + 2 * 64)
    backbone += 3 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 2 * (32 + 32 + 64)
    assert count_parameters(model) == backbone + 2 * (2048 * 19 * 9 + 19)


def test_original_deeplabv2_is_kept():
    with torch.device("meta"):
        model = build_model("deeplabv2_r101")
    assert model.backbone.conv1.weight.shape == (64, 3, 7, 7) and not hasattr(model.backbone, "stem")
    assert [b.dilation[0] for b in model.head.branches] == [6, 12, 18, 24]
    assert [blk.conv2.dilation[0] for blk in model.backbone.layer4] == [4, 4, 4]


def test_stem_and_contract_dilation_overrides_and_errors():
    model = build_model("deeplabv2_r_tiny", stem="deep", contract_dilation=True, head_dilations=[6, 12])
    assert model.backbone.stem[0].weight.shape == (4, 3, 3, 3)
    assert model.backbone.layer4[0].conv2.dilation == (2, 2)
    with pytest.raises(ConfigError, match=r"arch\.stem: expected one of 'plain' \| 'deep', got 'round'"):
        build_model("deeplabv2red_r_tiny", stem="round")
    with pytest.raises(ConfigError, match=r"arch\.contract_dilation: expected true or false, got 1"):
        build_model("deeplabv2red_r_tiny", contract_dilation=1)
    with pytest.raises(ConfigError, match="even width"):
        build_model("deeplabv2red_r_tiny", width=7)


def test_imagenet_shortcut_for_v1c_names_the_download():
    with pytest.raises(CheckpointError, match=r"resnet101_v1c-e67eebb6\.pth"):
        build_model("deeplabv2red_r101", pretrained="imagenet")


def _mmseg_v1c_tiny_state() -> dict[str, tuple[int, ...]]:
    """Key names and shapes of mmseg ``ResNetV1c(depth=50-like, stem_channels=8,
    base_channels=8)`` with one Bottleneck per stage, written from mmseg's module structure:
    ``stem`` = Sequential(conv, BN, ReLU, conv, BN, ReLU, conv, BN, ReLU); Bottleneck
    conv1/bn1 (1×1), conv2/bn2 (3×3), conv3/bn3 (1×1, ×4), downsample = Sequential(conv, BN);
    plus the ImageNet classifier ``fc``."""
    bn = ("weight", "bias", "running_mean", "running_var")
    shapes: dict[str, tuple[int, ...]] = {
        "stem.0.weight": (4, 3, 3, 3),
        **{f"stem.1.{k}": (4,) for k in bn},
        "stem.1.num_batches_tracked": (),
        "stem.3.weight": (4, 4, 3, 3),
        **{f"stem.4.{k}": (4,) for k in bn},
        "stem.4.num_batches_tracked": (),
        "stem.6.weight": (8, 4, 3, 3),
        **{f"stem.7.{k}": (8,) for k in bn},
        "stem.7.num_batches_tracked": (),
    }
    # (inplanes, planes) of layer1..4: 8 → 8, 32 → 16, 64 → 32, 128 → 64; out = 4 × planes
    for i, (cin, planes) in enumerate([(8, 8), (32, 16), (64, 32), (128, 64)], start=1):
        p = f"layer{i}.0"
        shapes[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
        shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
        shapes[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
        shapes[f"{p}.downsample.0.weight"] = (4 * planes, cin, 1, 1)
        for name, ch in (("bn1", planes), ("bn2", planes), ("bn3", 4 * planes), ("downsample.1", 4 * planes)):
            shapes.update({f"{p}.{name}.{k}": (ch,) for k in bn})
            shapes[f"{p}.{name}.num_batches_tracked"] = ()
    shapes["fc.weight"] = (1000, 256)
    shapes["fc.bias"] = (1000,)
    return shapes


def _random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {
        k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s) for k, s in shapes.items()
    }


def test_mmseg_v1c_checkpoint_loads_strictly(tmp_path):
    state = _random_state(_mmseg_v1c_tiny_state())
    path = tmp_path / "resnet_v1c.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 1}}, path)
    model = build_model("deeplabv2red_r_tiny", pretrained=str(path))
    bb = model.backbone
    assert torch.equal(bb.stem[0].weight, state["stem.0.weight"])
    assert torch.equal(bb.stem[7].running_var, state["stem.7.running_var"])
    assert torch.equal(bb.layer4[0].downsample[1].bias, state["layer4.0.downsample.1.bias"])
    assert torch.equal(bb.layer2[0].conv2.weight, state["layer2.0.conv2.weight"])
    # every backbone tensor came from the file (only fc was dropped)
    own = bb.state_dict()
    assert sorted(own) == sorted(k for k in state if not k.startswith("fc."))
    assert all(torch.equal(own[k], state[k]) for k in own)


def test_v1c_key_map_for_segmentor_keys_and_errors():
    state = _random_state(_mmseg_v1c_tiny_state())
    segmentor = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    segmentor["decode_head.aspp_modules.0.conv.weight"] = torch.zeros(19, 256, 3, 3)
    mapped = resnet_v1c_to_backbone(segmentor)
    assert sorted(mapped) == sorted(k for k in state if not k.startswith("fc."))
    assert resnet_v1c_key("stem.4.running_mean") == "stem.4.running_mean"
    assert resnet_v1c_key("layer3.0.downsample.0.weight") == "layer3.0.downsample.0.weight"
    assert resnet_v1c_key("fc.weight") is None and resnet_v1c_key("conv1.weight") is None
    assert resnet_v1c_key("stem.2.weight") is None  # a ReLU
    with pytest.raises(CheckpointError, match="conv1.weight"):
        resnet_v1c_to_backbone({**segmentor, "backbone.conv1.weight": torch.zeros(1)})


def test_plain_checkpoint_into_deep_stem_lists_the_stem_keys(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(build_model("deeplabv2_r_tiny").backbone.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        build_model("deeplabv2red_r_tiny", pretrained=str(path))
    msg = str(info.value)
    assert "missing keys: stem.0.weight" in msg and "unexpected keys: bn1." in msg
