import pytest
import torch

from duda.errors import DudaError
from duda.uda import (
    StrongAugConfig,
    blur_kernel_size,
    color_jitter,
    denormalise,
    gaussian_blur,
    renormalise,
    strong_transform,
)

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def _normalised_image(batch: int = 2, size: int = 16) -> torch.Tensor:
    rgb = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(3)) * 255
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


@pytest.mark.parametrize(("side", "kernel"), [(512, 51), (1024, 103), (540, 53), (760, 75), (10, 1), (30, 3)])
def test_blur_kernel_size_odd_about_ten_percent(side, kernel):
    assert blur_kernel_size(side) == kernel


def test_denormalise_renormalise_round_trip():
    img = _normalised_image()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    unit = denormalise(img, mean, std)
    assert unit.min() >= 0 and unit.max() <= 1
    assert torch.allclose(renormalise(unit, mean, std), img, atol=1e-5)


def test_jitter_identity_when_p_zero_and_changes_pixels_when_applied():
    img = _normalised_image()
    assert color_jitter(img, MEAN, STD, torch.Generator().manual_seed(0), p=0.0) is img
    out = color_jitter(img, MEAN, STD, torch.Generator().manual_seed(0), p=1.0)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert not torch.allclose(out, img, atol=1e-3)
    # still a valid normalised image: denormalised values within [0, 255]
    rgb = out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert rgb.min() >= -1e-3 and rgb.max() <= 255 + 1e-3
    again = color_jitter(img, MEAN, STD, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(out, again)


def test_jitter_zero_strength_is_identity_up_to_rounding():
    img = _normalised_image()
    out = color_jitter(img, MEAN, STD, torch.Generator().manual_seed(0), 1.0, 0.0, 0.0, 0.0, 0.0)
    assert torch.allclose(out, img, atol=1e-3)


def test_jitter_applies_in_about_p_of_calls():
    img = _normalised_image(batch=1, size=4)
    generator = torch.Generator().manual_seed(5)
    applied = sum(color_jitter(img, MEAN, STD, generator, p=0.8) is not img for _ in range(400))
    assert 0.72 * 400 < applied < 0.88 * 400


def test_jitter_rejects_wrong_mean_length():
    with pytest.raises(DudaError, match="mean"):
        color_jitter(_normalised_image(), (1.0, 2.0), STD, torch.Generator(), p=1.0)


def test_blur_smooths_with_per_sample_sigma_and_identity_when_p_zero():
    img = torch.zeros(2, 3, 60, 60)  # kernel 5x5
    img[:, :, 30, 30] = 1.0
    assert gaussian_blur(img, torch.Generator().manual_seed(0), p=0.0) is img
    out = gaussian_blur(img, torch.Generator().manual_seed(0), p=1.0)
    assert out.shape == img.shape
    assert out[:, :, 30, 30].max() < 1.0  # the impulse spread out
    assert torch.allclose(out.sum(dim=(2, 3)), torch.ones(2, 3), atol=1e-4)  # mass kept
    assert out[0, 0, 30, 30] != out[1, 0, 30, 30]  # a different sigma per sample


def test_blur_rejects_bad_sigma_range():
    with pytest.raises(DudaError, match="sigma"):
        gaussian_blur(torch.zeros(1, 3, 8, 8), torch.Generator(), p=1.0, sigma_range=(0.0, 1.0))


def test_strong_transform_respects_config():
    img = _normalised_image()
    off = StrongAugConfig(color_jitter_p=0.0, blur=False)
    assert strong_transform(img, MEAN, STD, torch.Generator(), off) is img
    on = StrongAugConfig(color_jitter_p=1.0, blur_p=1.0)
    out = strong_transform(img, MEAN, STD, torch.Generator().manual_seed(1), on)
    assert out.shape == img.shape and not torch.allclose(out, img)


def test_strong_transform_bfloat16_keeps_dtype():
    img = _normalised_image().bfloat16()
    on = StrongAugConfig(color_jitter_p=1.0, blur_p=1.0)
    out = strong_transform(img, MEAN, STD, torch.Generator().manual_seed(1), on)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_mixed_images_get_their_own_sigma_masked_batch_shares_one():
    """DACS calls strong_transform per mixed image (own sigma each); MIC once per batch (one sigma)."""
    img = _normalised_image(batch=1, size=64).expand(4, -1, -1, -1).contiguous()  # 4 identical images
    blur_only = StrongAugConfig(color_jitter_p=0.0, blur_p=1.0)
    per_image = strong_transform(img, MEAN, STD, torch.Generator().manual_seed(0), blur_only, per_image=True)
    shared = strong_transform(img, MEAN, STD, torch.Generator().manual_seed(0), blur_only, per_image=False)
    assert not torch.allclose(per_image[0], per_image[1])  # sigmas drawn independently
    for i in range(1, 4):
        assert torch.equal(shared[0], shared[i])
    assert not torch.allclose(shared[0], img[0])  # but it is blurred


def test_jitter_order_drawn_per_image_for_mixed_images_per_call_for_masked(monkeypatch):
    import duda.uda.strong_aug as sa

    calls = []
    real = sa.jitter_unit_image
    monkeypatch.setattr(
        sa, "jitter_unit_image", lambda x, *a, **k: calls.append(x.shape[0]) or real(x, *a, **k)
    )
    jitter_only = StrongAugConfig(color_jitter_p=1.0, blur=False)
    strong_transform(_normalised_image(3), MEAN, STD, torch.Generator().manual_seed(0), jitter_only, True)
    assert calls == [1, 1, 1]  # one random order (kornia call) per mixed image
    calls.clear()
    strong_transform(_normalised_image(3), MEAN, STD, torch.Generator().manual_seed(0), jitter_only, False)
    assert calls == [3]


def test_apply_decisions_are_one_draw_per_iteration_for_all_images():
    cfg = StrongAugConfig(color_jitter_p=0.5, blur_p=0.5)
    img = _normalised_image(4)
    for seed in range(20):
        out = strong_transform(img, MEAN, STD, torch.Generator().manual_seed(seed), cfg, per_image=True)
        changed = [not torch.equal(out[i], img[i]) for i in range(4)]
        assert len(set(changed)) == 1  # all four augmented, or none
