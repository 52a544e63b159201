import numpy as np
import pytest
import torch

from duda.data import transforms as T


def test_keep_ratio_sizes_of_the_benchmarks():
    assert T.keep_ratio_size(1914, 1052, (1280, 720)) == (1280, 704)  # GTA5
    assert T.keep_ratio_size(2048, 1024, (1024, 512)) == (1024, 512)  # Cityscapes
    assert T.keep_ratio_size(1280, 760, (1280, 760)) == (1280, 760)  # SYNTHIA
    assert T.keep_ratio_size(1920, 1080, (960, 540)) == (960, 540)  # ACDC / Dark Zurich
    # portrait: the long side must fit max(scale) and the short side min(scale); the short one binds
    assert T.keep_ratio_size(100, 200, (50, 20)) == (20, 40)


def test_resize_keep_ratio_uses_nearest_for_labels():
    img = np.zeros((32, 64, 3), np.uint8)
    label = np.tile(np.array([0, 7], np.uint8), (32, 32))
    small, small_label = T.resize_keep_ratio(img, label, (32, 16))
    assert small.shape == (16, 32, 3) and small_label.shape == (16, 32)
    assert set(np.unique(small_label)) <= {0, 7}
    assert T.resize_keep_ratio(img, None, None)[0] is img


def test_normalize_and_denormalize_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = T.normalize(img)
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    assert x[0, 0, 0].item() == pytest.approx((img[0, 0, 0] - 123.675) / 58.395, abs=1e-5)
    assert x[2, 1, 2].item() == pytest.approx((img[1, 2, 2] - 103.53) / 57.375, abs=1e-5)
    np.testing.assert_array_equal(T.denormalize(x).numpy(), img)
    assert T.denormalize(x[None]).shape == (1, 5, 7, 3)


def test_crop_avoids_a_dominant_class():
    # Columns 0..55 class 0, 56..63 class 1. With a 16-wide crop only x0 in 45..48 keeps class 0 < 75%.
    label = np.zeros((16, 64), np.uint8)
    label[:, 56:] = 1
    for seed in range(20):
        box = T.choose_crop_box(label, (16, 16), np.random.default_rng(seed), cat_max_ratio=0.75, tries=1000)
        assert 45 <= box[2] <= 48, box
    # off (ratio 1): the first random box, no redraws
    box = T.choose_crop_box(label, (16, 16), np.random.default_rng(3), cat_max_ratio=1.0)
    assert box == T.random_crop_box(16, 64, (16, 16), np.random.default_rng(3))


def test_crop_gives_up_after_tries_and_ignores_255():
    # class 0 plus ignore only: never two classes, so every try fails. mmseg redraws after each
    # failed check, the 10th included, so the crop is the 11th box drawn, never checked.
    label = np.zeros((16, 64), np.uint8)
    label[:, 40:] = 255
    rng = np.random.default_rng(7)
    drawn = [T.random_crop_box(16, 64, (16, 16), rng) for _ in range(11)]
    assert drawn[10] != drawn[9]
    assert T.choose_crop_box(label, (16, 16), np.random.default_rng(7), tries=10) == drawn[10]


def test_crop_draws_one_box_more_than_it_checks(monkeypatch):
    boxes = iter([(0, 16, i, i + 16) for i in range(20)])
    calls = []
    monkeypatch.setattr(T, "random_crop_box", lambda *a: calls.append(1) or next(boxes))
    label = np.zeros((16, 64), np.uint8)
    assert T.choose_crop_box(label, (16, 16), np.random.default_rng(0), tries=10) == (0, 16, 10, 26)
    assert len(calls) == 11


def test_random_crop_and_small_images():
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    out, lbl, box = T.random_crop(img, None, (20, 5), np.random.default_rng(0))
    assert out.shape == (10, 5, 3) and lbl is None and box[0] == 0 and box[1] == 10
    padded = T.pad_to(np.ones((10, 5), np.uint8), (20, 8), 255)
    assert padded.shape == (20, 8) and padded[15, 7] == 255 and padded[0, 0] == 1


def test_hflip():
    a = np.array([[1, 2, 3]])
    flipped, none = T.hflip(a, None)
    assert flipped.tolist() == [[3, 2, 1]] and none is None


def test_valid_margin_mask_scales_with_resize():
    full = T.valid_margin_mask((1024, 2048), (30, 240, 30, 30))
    assert full[29, 100] == 0 and full[30, 100] == 1 and full[783, 100] == 1 and full[784, 100] == 0
    assert full[500, 29] == 0 and full[500, 30] == 1 and full[500, 2017] == 1 and full[500, 2018] == 0
    half = T.valid_margin_mask((512, 1024), (30, 240, 30, 30))
    assert half[14, 500] == 0 and half[15, 500] == 1 and half[391, 500] == 1 and half[392, 500] == 0
    assert (T.valid_margin_mask((8, 8), None) == 1).all()
