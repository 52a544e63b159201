"""HRDA multi-resolution pieces: crop geometry, fusion, losses, sliding window, inference."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from duda.methods.hrda import hrda_feature_distance, hrda_losses, teacher_logits
from duda.models import build_model
from duda.models.hrda import (
    HRDAModel,
    HRDAOutput,
    MultiResSpec,
    blur_down_up,
    build_hrda_model,
    crop,
    fuse_scales,
    get_crop_box,
    hrda_from_spec,
    slide_assemble,
)
from duda.models.segmentor import SegmentationModel

# ---------------------------------------------------------------------------------------------
# Crop geometry


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_crop_box_offsets_are_the_reference_multiples():
    # 40x24 image, 16x8 crop, divisible 8: rows: margin 24 -> (24+1)//8 = 3 choices {0, 8, 16}
    # (24 itself is never drawn, as in the reference); columns: margin 16 -> 17//8 = 2: {0, 8}.
    g = _gen()
    boxes = [get_crop_box(40, 24, 16, 8, 8, g) for _ in range(200)]
    assert {b[0] for b in boxes} == {0, 8, 16}
    assert {b[2] for b in boxes} == {0, 8}
    assert all(b[1] - b[0] == 16 and b[3] - b[2] == 8 for b in boxes)


def test_crop_box_divisible_one_reaches_every_offset():
    boxes = {get_crop_box(5, 4, 3, 4, 1, _gen(s))[:2] for s in range(60)}
    assert boxes == {(0, 3), (1, 4), (2, 5)}  # margin 2: offsets 0, 1, 2; columns: crop == width


def test_crop_box_whole_image_draws_nothing():
    g = _gen(3)
    assert get_crop_box(32, 48, 32, 48, 8, g) == (0, 32, 0, 48)
    assert torch.equal(
        torch.randint(0, 1000, (4,), generator=g), torch.randint(0, 1000, (4,), generator=_gen(3))
    )


def test_crop_box_margin_below_divisible_gives_offset_zero():
    # margin 2 with divisible 8: the reference's randint(0, 0) fails; the only multiple is 0.
    assert get_crop_box(10, 10, 8, 8, 8, _gen()) == (0, 8, 0, 8)


def test_crop_box_is_reproducible_and_draws_rows_first():
    a = [get_crop_box(1024, 1024, 512, 512, 8, _gen(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    g = _gen(7)
    ky = int(torch.randint(0, 64, (1,), generator=g))  # (512 + 1) // 8 = 64 choices per axis
    kx = int(torch.randint(0, 64, (1,), generator=g))
    assert a[0] == (8 * ky, 8 * ky + 512, 8 * kx, 8 * kx + 512)
    assert a[0][0] <= 504 and a[0][2] <= 504


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ((16, 16, 32, 8, 1), "larger than the image"),
        ((16, 16, 8, 8, 0), "divisible"),
        ((16, 16, 0, 8, 1), "crop_h"),
        ((16, 16.0, 8, 8, 1), "img_w"),
    ],
)
def test_crop_box_bad_inputs(args, word):
    with pytest.raises(ValueError, match=word):
        get_crop_box(*args, _gen())


def test_crop_handles_2_3_4_dims():
    t = torch.arange(5 * 6).view(5, 6)
    assert crop(t, (1, 3, 2, 5)).tolist() == [[8, 9, 10], [14, 15, 16]]
    assert crop(t[None].expand(2, 5, 6), (1, 3, 2, 5)).shape == (2, 2, 3)
    assert crop(t[None, None].expand(2, 3, 5, 6), (0, 5, 0, 1)).shape == (2, 3, 5, 1)
    with pytest.raises(ValueError, match="2-, 3- or 4-dim"):
        crop(torch.zeros(1, 1, 1, 5, 6), (0, 1, 0, 1))
    with pytest.raises(ValueError, match="y1 < y2"):
        crop(t, (3, 3, 0, 1))


# ---------------------------------------------------------------------------------------------
# Spec


def test_spec_defaults_are_the_published_config():
    s = MultiResSpec()
    assert s.scales == (0.5, 1.0) and s.hr_crop_size == (512, 512) and s.crop_coord_divisible == 8
    assert s.hr_loss_weight == 0.1 and s.lr_loss_weight == 0 and s.feature_scale == 0.5
    assert s.hr_slide_inference and s.hr_slide_overlapping and s.attention_classwise
    assert s.fixed_attention is None and not s.blur_hr_crop
    assert s.slide_stride == (256, 256)
    assert MultiResSpec(hr_slide_overlapping=False).slide_stride == (512, 512)
    assert MultiResSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"scales": (0.5, 2.0)}, "scales"),
        ({"scales": (0.0, 1.0)}, "scales"),
        ({"hr_crop_size": (512, 0)}, "hr_crop_size"),
        ({"crop_coord_divisible": 0}, "crop_coord_divisible"),
        ({"hr_loss_weight": 1.5}, "hr_loss_weight"),
        ({"hr_loss_weight": 0.6, "lr_loss_weight": 0.6}, "hr_loss_weight + lr_loss_weight"),
        ({"fixed_attention": 2.0}, "fixed_attention"),
        ({"feature_scale": 1.0}, "feature_scale"),
        ({"feature_scale": "some"}, "feature_scale"),
        ({"attention_channels": 0}, "attention_channels"),
        ({"hr_slide_inference": 1}, "hr_slide_inference"),
    ],
)
def test_spec_rejects_bad_values_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=re.escape(f"MultiResSpec.{field}:")):
        MultiResSpec(**kw)


def test_spec_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown field"):
        MultiResSpec.from_dict({"scale": [0.5, 1]})


# ---------------------------------------------------------------------------------------------
# Fusion, by hand

# Bilinear ×2 upsampling (align_corners=False) of the 1-D LR mask [0, 1, 1, 0]: HR cell j samples
# the LR grid at j/2 − 1/4, clamped at the borders.
P = torch.tensor([0.0, 0.25, 0.75, 1.0, 1.0, 0.75, 0.25, 0.0])


def test_fusion_with_crop_by_hand():
    # Input 32x32, output stride 4, LR scale 0.5: LR logits 4x4 (one cell = 8 input px), HR grid
    # 8x8. Crop (8, 24, 8, 24): LR cells 1..2, HR cells 2..5. K = 1, LR logit 2, HR logit 6,
    # attention 0.25. Masked attention a = 0.25·m (m = 1 on LR cells 1..2). By linearity of the
    # upsampling: up(a) = 0.25·P_i·P_j, up((1 − a)·2) = 2 − 0.5·P_i·P_j, and
    # fused = up(a)·[6 inside the crop] + up((1 − a)·2).
    lr = torch.full((1, 1, 4, 4), 2.0)
    hr = torch.full((1, 1, 4, 4), 6.0)
    att = torch.full((1, 1, 4, 4), 0.25)
    fused, lr_weighted, up_att = fuse_scales(lr, hr, att, 2.0, 4, 0.5, (8, 24, 8, 24))
    pp = P[:, None] * P[None, :]
    inside = torch.zeros(8, 8)
    inside[2:6, 2:6] = 6.0
    torch.testing.assert_close(up_att[0, 0], 0.25 * pp)
    torch.testing.assert_close(fused[0, 0], 0.25 * pp * inside + 2 - 0.5 * pp)
    # spot values: centre 0.25·6 + 1.5 = 3; crop corner (P = 0.75): 0.84375 + 2 − 0.28125;
    # just outside the crop the blurred attention is non-zero but there is no HR logit: 2 − 0.125
    assert fused[0, 0, 3, 3] == 3.0 and fused[0, 0, 2, 2] == 2.5625 and fused[0, 0, 1, 3] == 1.875
    assert fused[0, 0, 0].eq(2.0).all() and up_att[0, 0, 0].eq(0).all()  # attention 0 far from the crop
    expected_lr = torch.full((4, 4), 2.0)
    expected_lr[1:3, 1:3] = 1.5
    torch.testing.assert_close(lr_weighted[0, 0], expected_lr)


def test_fusion_without_crop_and_fixed_attention():
    lr = torch.full((2, 3, 4, 4), 2.0)
    hr = torch.full((2, 3, 8, 8), 6.0)
    fused, _, _ = fuse_scales(lr, hr, torch.full((2, 3, 4, 4), 0.25), 2.0, 4, 0.5)
    torch.testing.assert_close(fused, torch.full((2, 3, 8, 8), 3.0))  # 0.25·6 + 0.75·2
    fused, _, att = fuse_scales(lr, hr, 0.5, 2.0, 4, 0.5)
    assert att == 0.5
    torch.testing.assert_close(fused, torch.full((2, 3, 8, 8), 4.0))
    with pytest.raises(ValueError, match="differ"):
        fuse_scales(lr, hr[..., :7], 0.5, 2.0, 4, 0.5)
    with pytest.raises(ValueError, match="multiples of 8"):
        fuse_scales(lr, torch.zeros(2, 3, 4, 4), 0.5, 2.0, 4, 0.5, (0, 20, 0, 16))  # 5x4 cells


# ---------------------------------------------------------------------------------------------
# Losses, by hand


def _loss_case():
    # 8x8 input, crop (0, 4, 0, 4): 16 of 64 pixels. K = 2. Labels 0 in the crop, 1 outside.
    labels = torch.ones(1, 8, 8, dtype=torch.long)
    labels[:, :4, :4] = 0
    fused = torch.zeros(1, 2, 2, 2)  # CE = ln 2 at every pixel
    hr = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1).expand(1, 2, 1, 1).clone()
    lr = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).clone()
    out = HRDAOutput(fused, lr, hr, (0, 4, 0, 4), None, 0.0)
    return out, labels


def test_loss_composition_by_hand():
    out, labels = _loss_case()
    ln2, l43, l4 = math.log(2), math.log(4 / 3), math.log(4)
    # HR logits (ln 3, 0) on the cropped labels (all 0): ln(1 + 1/3). Without the crop they would
    # also see label 1 (ln 4). LR logits (0, ln 3): label 1 → ln(4/3) (48 px), label 0 → ln 4 (16 px).
    spec = MultiResSpec(hr_loss_weight=0.1, lr_loss_weight=0.2)
    total, parts = hrda_losses(out, labels, None, spec)
    lr_ce = (48 * l43 + 16 * l4) / 64
    assert parts["fused"].item() == pytest.approx(0.7 * ln2)
    assert parts["hr"].item() == pytest.approx(0.1 * l43)
    assert parts["lr"].item() == pytest.approx(0.2 * lr_ce)
    assert total.item() == pytest.approx(0.7 * ln2 + 0.2 * lr_ce + 0.1 * l43)


def test_loss_published_weights_and_pixel_weight_crop():
    out, labels = _loss_case()
    total, parts = hrda_losses(out, labels, None, MultiResSpec())
    assert set(parts) == {"fused", "hr"}
    assert total.item() == pytest.approx(0.9 * math.log(2) + 0.1 * math.log(4 / 3))
    # Pixel weight 1 in the crop, 0 outside (averaged over all 64 px): fused ln2·16/64; the HR
    # part sees the cropped weight (all ones): unchanged.
    weight = torch.zeros(1, 1, 8, 8)
    weight[..., :4, :4] = 1
    total, parts = hrda_losses(out, labels, weight, MultiResSpec())
    assert parts["fused"].item() == pytest.approx(0.9 * math.log(2) / 4)
    assert parts["hr"].item() == pytest.approx(0.1 * math.log(4 / 3))
    total, parts = hrda_losses(out, labels, None, MultiResSpec(hr_loss_weight=0.0))
    assert set(parts) == {"fused"} and total.item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------------------------------------
# Sliding-window assembly, by hand


def _columns(h: int, w: int) -> torch.Tensor:
    return torch.arange(w, dtype=torch.float32).expand(1, 1, h, w).clone()


def _window_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=(2, 3), keepdim=True).expand_as(t)


def test_slide_assemble_averages_overlaps():
    # W = 6, crop 4, stride 2: windows x ∈ [0,4) (mean 1.5) and [2,6) (mean 3.5).
    out = slide_assemble(_window_mean, _columns(4, 6), (4, 4), (2, 2))
    assert out[0, 0, 0].tolist() == [1.5, 1.5, 2.5, 2.5, 3.5, 3.5]
    # W = 7: a third window is moved back to [3,7) (mean 4.5); column 3 is covered three times.
    out = slide_assemble(_window_mean, _columns(4, 7), (4, 4), (2, 2))
    expected = [1.5, 1.5, 2.5, 9.5 / 3, 4.0, 4.0, 4.5]
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(expected))


def test_slide_assemble_output_stride_and_one_batched_call():
    calls = []

    def pooled(t):
        calls.append(t.shape[0])
        return F.avg_pool2d(t, 2)

    img = _columns(4, 6).expand(3, 1, 4, 6)  # batch 3, two windows
    out = slide_assemble(pooled, img, (4, 4), (2, 2), output_stride=2)
    assert calls == [6]  # one call with all windows of all images
    # window [0,4) pools to (0.5, 2.5), window [2,6) to (2.5, 4.5); middle cell averaged.
    assert out.shape == (3, 1, 2, 3) and out[2, 0, 1].tolist() == [0.5, 2.5, 4.5]


def test_slide_assemble_image_smaller_than_crop_and_bad_stride():
    out = slide_assemble(_window_mean, _columns(3, 4), (8, 8), (4, 4))
    assert out.eq(1.5).all() and out.shape == (1, 1, 3, 4)
    with pytest.raises(ValueError, match="divisible"):
        slide_assemble(lambda t: F.avg_pool2d(t, 2, ceil_mode=True), _columns(6, 6), (3, 3), (3, 3), 2)


# ---------------------------------------------------------------------------------------------
# The model


class PatchBackbone(nn.Module):
    """A 4×4 stride-4 patch conv: each output cell sees only its own input patch, so windows at
    offsets that are multiples of 4 give exactly the whole image's features."""

    out_channels = (4,)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)

    def forward(self, x):
        return [self.conv(x)]


class PointHead(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, k, 1)

    def forward(self, feats):
        return self.conv(feats[-1])


def _toy(k: int = 3, **spec) -> HRDAModel:
    base = SegmentationModel(PatchBackbone(), PointHead(k), 4, {"name": "toy", "num_classes": k, "arch": {}})
    return build_hrda_model(base, MultiResSpec(**spec), attention_head=PointHead(k)).eval()


def _by_hand(m: HRDAModel, x: torch.Tensor, hr_logits: torch.Tensor) -> torch.Tensor:
    """attention·HR + up((1 − attention)·LR) on the whole image, written out directly."""
    lr_img = F.interpolate(x, size=(x.shape[2] // 2, x.shape[3] // 2), mode="bilinear", align_corners=False)
    feats = m.backbone(lr_img)
    lr, a = m.head.seg(feats), torch.sigmoid(m.head.attention(feats))
    size = hr_logits.shape[-2:]
    up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    return up(a) * hr_logits + up((1 - a) * lr)


def test_slide_inference_equals_whole_image_hr_on_a_local_model():
    torch.manual_seed(1)
    m = _toy(hr_crop_size=(16, 16))
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        slid = m(x)
        expected = _by_hand(m, x, m.head.seg(m.backbone(x)))
        m.mr = MultiResSpec(hr_crop_size=(16, 16), hr_slide_inference=False)
        whole = m(x)
    assert slid.shape == (2, 3, 8, 12)
    torch.testing.assert_close(slid, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole, expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def tiny_base() -> SegmentationModel:
    """One tiny MiT + DAFormer model for the module (the first MiT build imports transformers,
    a few seconds once); tests wrap deep copies of it."""
    torch.manual_seed(0)
    return build_model("daformer_mit_tiny", 4, head_channels=16)


@pytest.fixture
def tiny_hrda(tiny_base):
    def make(crop_size=(64, 64), **spec) -> HRDAModel:
        torch.manual_seed(0)
        base = copy.deepcopy(tiny_base)
        return build_hrda_model(base, MultiResSpec(hr_crop_size=crop_size, **spec)).eval()

    return make


def test_tiny_mit_slide_with_one_window_equals_direct_computation(tiny_hrda):
    m = tiny_hrda((64, 64))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fused = m(x)
        expected = _by_hand(m, x, m.head.seg(m.backbone(x)))
    assert fused.shape == (1, 4, 16, 16)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)


def test_training_form_equals_hand_assembled_fusion(tiny_hrda):
    m = tiny_hrda((32, 32))
    x = torch.randn(2, 3, 64, 64)
    box = (8, 40, 24, 56)  # offsets multiples of 8
    with torch.no_grad():
        out = m(x, crop_box=box, return_features=True)
        lr_img = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        lr_feats = m.backbone(lr_img)
        hr_feats = m.backbone(x[:, :, 8:40, 24:56])
        lr, hr = m.head.seg(lr_feats), m.head.seg(hr_feats)
        a = torch.sigmoid(m.head.attention(lr_feats))
        mask = torch.zeros(1, 1, 8, 8)
        mask[..., 1:5, 3:7] = 1  # the box / 8 on the LR logit grid
        a = a * mask
        hr_map = torch.zeros(2, 4, 16, 16)
        hr_map[..., 2:10, 6:14] = hr  # the box / 4 on the HR logit grid
        up = lambda t: F.interpolate(t, size=(16, 16), mode="bilinear", align_corners=False)  # noqa: E731
        expected = up(a) * hr_map + up((1 - a) * lr)
    torch.testing.assert_close(out.fused, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.lr, (1 - a) * lr, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.hr, hr, atol=1e-6, rtol=0)
    assert (
        out.box == box and out.features[0].shape == (2, 64, 1, 1) and out.features[1].shape == (2, 64, 1, 1)
    )
    # the fused map far from the crop is the LR prediction alone (attention 0 there)
    torch.testing.assert_close(out.fused[..., 15, :], up(lr)[..., 15, :], atol=1e-6, rtol=0)


def test_model_attributes_spec_roundtrip_and_head_parameters(tiny_hrda):
    m = tiny_hrda((32, 32))
    assert m.num_classes == 4 and m.output_stride == 4 and m.min_input_side == 64
    assert m.spec["name"] == "daformer_mit_tiny" and m.spec["hrda"]["hr_crop_size"] == [32, 32]
    head_ids = {id(p) for p in m.head.parameters()}
    assert all(id(p) in head_ids for p in m.head.attention.parameters())
    # the DAFormer attention head: a 1x1 conv fusion (the reference's 'conv', kernel 1)
    assert m.head.attention.fuse[0].kernel_size == (1, 1)
    assert m.head.attention.classifier.out_channels == 4
    rebuilt = hrda_from_spec(m.spec)
    rebuilt.load_state_dict(m.state_dict())  # strict: same architecture
    single = m.single_scale_model()
    assert single.head is m.head.seg and "hrda" not in single.spec
    one = tiny_hrda((32, 32), attention_classwise=False)
    assert one.head.attention.classifier.out_channels == 1
    assert tiny_hrda((32, 32), fixed_attention=0.5).head.attention is None
    with pytest.raises(ValueError, match="num_classes"):
        build_hrda_model(m.single_scale_model(), MultiResSpec(), num_classes=5)


def test_teacher_logits_are_the_upsampled_inference_form(tiny_hrda):
    m = tiny_hrda((32, 32))
    x = torch.randn(1, 3, 64, 64)
    t = teacher_logits(m, x)
    assert t.shape == (1, 4, 64, 64) and not t.requires_grad
    with torch.no_grad():
        expected = F.interpolate(m(x), size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(t, expected)


# ---------------------------------------------------------------------------------------------
# Feature distance


class OnesBackbone(nn.Module):
    """Features of ones (norm 1 per cell with one channel) at stride 4."""

    def forward(self, x):
        return [torch.ones(x.shape[0], 1, x.shape[2] // 4, x.shape[3] // 4, requires_grad=True)]


class ZerosBackbone(nn.Module):
    def forward(self, x):
        return [torch.zeros(x.shape[0], 1, x.shape[2] // 4, x.shape[3] // 4)]


@pytest.mark.parametrize(
    ("thing_rows", "feature_scale", "expected"),
    [
        ((0, 32), 0.5, 1.0),  # things everywhere: LR term 1
        ((0, 32), "all", 2.0),  # plus the HR crop term 1
        ((0, 8), "all", 1.0),  # things only above the crop: the cropped labels give no HR cell
        ((8, 24), "all", 2.0),
    ],
)
def test_feature_distance_scales_and_label_crop(thing_rows, feature_scale, expected):
    # Student features all 1, ImageNet features all 0: every kept cell contributes ‖1 − 0‖ = 1,
    # so each non-empty term is weight · 1. 32x32 input, crop (8, 24, 8, 24).
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, thing_rows[0] : thing_rows[1]] = 13
    feats = (torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4))  # LR 16x16 / 4, HR crop 16x16 / 4
    out = HRDAOutput(torch.zeros(1, 19, 8, 8), torch.zeros(1, 19, 4, 4), torch.zeros(1, 19, 4, 4),
                     (8, 24, 8, 24), feats, 0.0)  # fmt: skip
    spec = MultiResSpec(hr_crop_size=(16, 16), feature_scale=feature_scale)
    loss = hrda_feature_distance(out, torch.zeros(1, 3, 32, 32), labels, ZerosBackbone(), spec, weight=0.5)
    assert loss.item() == pytest.approx(0.5 * expected)


def test_feature_distance_needs_features():
    out = HRDAOutput(torch.zeros(1), torch.zeros(1), torch.zeros(1), (0, 1, 0, 1), None, 0.0)
    with pytest.raises(ValueError, match="return_features"):
        hrda_feature_distance(
            out, torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8), OnesBackbone(), MultiResSpec()
        )


def test_blur_down_up_by_hand():
    # Down by 0.5 samples columns 0.5 and 2.5 of the ramp [0, 1, 2, 3]; up by 2 samples those at
    # -0.25 (clamped), 0.25, 0.75, 1.25 (clamped): [0.5, 1, 2, 2.5].
    out = blur_down_up(_columns(2, 4))
    assert out[0, 0, 0].tolist() == [0.5, 1.0, 2.0, 2.5]
