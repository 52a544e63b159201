import pytest
import torch

from duda.errors import DudaError
from duda.uda import downscale_label_ratio, feature_distance_loss, thing_cell_mask


def _gt() -> torch.Tensor:
    # 4x4 label pooled to 2x2 cells of 2x2 pixels:
    # cell (0,0): car 13 x4 -> share 1.0 thing ; cell (0,1): person 11 x3 + road 0 -> 0.75 thing
    # cell (1,0): road x4 -> stuff ; cell (1,1): rider 12 x2 + ignore x2 -> share 0.5 dropped
    return torch.tensor(
        [[[13, 13, 11, 11], [13, 13, 11, 0], [0, 0, 12, 255], [0, 0, 12, 255]]], dtype=torch.long
    )


def test_downscale_label_ratio_by_class_histogram():
    pooled = downscale_label_ratio(_gt(), (2, 2), min_ratio=0.75)
    assert pooled.tolist() == [[[13, 11], [0, 255]]]
    strict = downscale_label_ratio(_gt(), (2, 2), min_ratio=0.8)
    assert strict.tolist() == [[[13, 255], [0, 255]]]


def test_mostly_ignore_cell_is_dropped():
    gt = torch.full((1, 2, 2), 255)
    gt[0, 0, 0] = 13
    assert downscale_label_ratio(gt, (1, 1), min_ratio=0.2).tolist() == [[[255]]]


def test_thing_cell_mask():
    mask = thing_cell_mask(_gt(), (2, 2))
    assert mask.dtype == torch.bool and mask.tolist() == [[[True, True], [False, False]]]


def test_label_padded_to_feature_grid():
    gt = torch.full((1, 5, 5), 13)  # 5 px at stride 2 -> 3 cells; last row/col half ignore-padded
    pooled = downscale_label_ratio(gt, (3, 3), min_ratio=0.75)
    assert pooled.tolist() == [[[13, 13, 255], [13, 13, 255], [255, 255, 255]]]
    with pytest.raises(DudaError, match="stride"):
        downscale_label_ratio(torch.zeros(1, 8, 16, dtype=torch.long), (2, 2))


def test_loss_is_weighted_mean_norm_over_masked_cells():
    feat = torch.zeros(1, 2, 2, 2, requires_grad=True)
    imnet = torch.zeros(1, 2, 2, 2)
    imnet[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # norm 5
    imnet[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # norm 1
    imnet[0, :, 1, 0] = torch.tensor([6.0, 8.0])  # norm 10, not masked
    mask = torch.tensor([[[True, True], [False, False]]])
    loss = feature_distance_loss(feat, imnet, mask, weight=0.5)
    assert loss.item() == pytest.approx(0.5 * (5 + 1) / 2)
    loss.backward()
    assert feat.grad[0, :, 1, 0].abs().sum() == 0 and feat.grad[0, :, 0, 0].abs().sum() > 0
    unmasked = feature_distance_loss(feat, imnet, None, weight=1.0)
    assert unmasked.item() == pytest.approx((5 + 1 + 10 + 0) / 4)


def test_empty_mask_gives_zero_with_graph_no_nan():
    feat = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = feature_distance_loss(feat, torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(feat.grad, torch.zeros_like(feat))


def test_identical_features_give_finite_gradient():
    feat = torch.ones(1, 2, 2, 2, requires_grad=True)
    loss = feature_distance_loss(feat, torch.ones(1, 2, 2, 2))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(feat.grad).all()
