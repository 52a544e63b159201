import math

import pytest
import torch

from duda.errors import DudaError
from duda.uda import ce, kd_kl, pixel_ce, weighted_ce


def _logits() -> torch.Tensor:
    # 1 image, 2 classes, 1x2 pixels: pixel 0 logits (ln 3, 0) -> p(class0)=0.75; pixel 1 (0, 0) -> 0.5
    return torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])


def test_pixel_ce_hand_calculation():
    loss = pixel_ce(_logits(), torch.tensor([[[0, 255]]]))
    assert loss[0, 0, 0].item() == pytest.approx(-math.log(0.75))
    assert loss[0, 0, 1].item() == 0.0


def test_weighted_ce_averages_over_all_pixels_including_ignored():
    labels = torch.tensor([[[0, 255]]])
    weight = torch.tensor([[[0.4, 1.0]]])
    expected = 0.4 * -math.log(0.75) / 2
    assert weighted_ce(_logits(), labels, weight).item() == pytest.approx(expected)
    both = torch.tensor([[[0, 1]]])
    expected = (0.4 * -math.log(0.75) + 1.0 * -math.log(0.5)) / 2
    assert weighted_ce(_logits(), both, weight).item() == pytest.approx(expected)
    assert weighted_ce(_logits(), both).item() == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2)


def test_ce_averages_over_all_pixels_by_default_as_mmseg():
    """mmseg 0.x divides the source CE by ALL pixels (ignored ones count 0): 1 of 2 labelled -> /2."""
    labels = torch.tensor([[[0, 255]]])
    assert ce(_logits(), labels).item() == pytest.approx(-math.log(0.75) / 2)
    assert ce(_logits(), labels, average="all").item() == pytest.approx(-math.log(0.75) / 2)
    assert ce(_logits(), labels, average="valid").item() == pytest.approx(-math.log(0.75))


def test_ce_all_ignored_is_zero_not_nan():
    logits = _logits().requires_grad_(True)
    loss = ce(logits, torch.full((1, 1, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_logits_upsampled_bilinearly_to_label_size():
    logits = torch.zeros(1, 2, 1, 1)
    logits[0, 0] = math.log(3.0)  # constant field: upsampling keeps p(class 0) = 0.75 everywhere
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    assert weighted_ce(logits, labels).item() == pytest.approx(-math.log(0.75), rel=1e-5)
    grid = torch.tensor([[[[0.0, 4.0]], [[0.0, 0.0]]]])  # 1x2 -> 1x4: 0, 1, 3, 4 (align_corners=False)
    per_pixel = pixel_ce(grid, torch.zeros(1, 1, 4, dtype=torch.long))
    expected = [math.log(1 + math.exp(-v)) for v in (0.0, 1.0, 3.0, 4.0)]
    assert per_pixel[0, 0].tolist() == pytest.approx(expected, rel=1e-5)


def test_weight_shape_checked():
    with pytest.raises(DudaError, match="weight"):
        weighted_ce(_logits(), torch.tensor([[[0, 1]]]), torch.ones(1, 2, 2))


def test_kd_kl_zero_for_equal_and_scaled_by_temperature_squared():
    s = torch.randn(2, 3, 4, 4)
    assert kd_kl(s, s, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[[[0.0]], [[0.0]]]])
    teacher = torch.tensor([[[[math.log(3.0)]], [[0.0]]]])  # p_t = (0.75, 0.25), p_s = (0.5, 0.5)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_kl(student, teacher, temperature=1.0).item() == pytest.approx(kl, rel=1e-5)
    teacher_t2 = teacher * 2.0  # at T=2 the teacher's softened distribution is again (0.75, 0.25)
    assert kd_kl(student, teacher_t2, temperature=2.0).item() == pytest.approx(4 * kl, rel=1e-5)


def test_soft_ce_equals_weighted_ce_for_one_hot_targets_and_is_entropy_free_otherwise():
    from duda.uda.losses import soft_ce

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 4, generator=g)
    labels = torch.randint(0, 5, (2, 8, 8), generator=g)
    labels[0, 0, :3] = 255
    weight = torch.rand(2, 8, 8, generator=g)
    onehot = torch.nn.functional.one_hot(labels.clamp(max=4), 5).permute(0, 3, 1, 2).float()
    onehot = onehot * (labels != 255).unsqueeze(1)  # ignored pixel: an all-zero target, no loss
    assert torch.allclose(soft_ce(logits, onehot, weight), weighted_ce(logits, labels, weight), atol=1e-6)
    # a soft target q: -sum q log p by hand at the upsampled logits
    q = torch.softmax(torch.randn(2, 5, 8, 8, generator=g), dim=1)
    up = torch.nn.functional.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    by_hand = -(q * torch.log_softmax(up, 1)).sum(1).mean()
    assert torch.allclose(soft_ce(logits, q), by_hand, atol=1e-6)
    with pytest.raises(DudaError, match="pixel weight"):
        soft_ce(logits, q, weight[:, :4])
