import numpy as np
import pytest
import torch
from torch import nn

from duda.evaluation.inconsistency_report import inconsistency_report, plot_report


class FixedPrediction(nn.Module):
    """Predicts a fixed label map whatever the input (logits = 10 * one-hot)."""

    def __init__(self, labels: torch.Tensor, k: int):
        super().__init__()
        self.register_buffer("logits", 10.0 * nn.functional.one_hot(labels, k).permute(2, 0, 1).float())

    def forward(self, x):
        return self.logits.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


def test_report_matches_hand_computed_iou():
    # 1x4 images, 3 classes. large: [0,0,1,2]; small: [0,1,1,1]; gt: [0,0,1,2]
    large = FixedPrediction(torch.tensor([[0, 0, 1, 2]]), 3)
    small = FixedPrediction(torch.tensor([[0, 1, 1, 1]]), 3)
    sample = {"img": torch.zeros(1, 3, 1, 4), "gt": torch.tensor([[[0, 0, 1, 2]]])}
    rep = inconsistency_report(large, small, [sample, sample], ["a", "b", "c"])
    # agreement IoU per class: c0 1/2, c1 1/3, c2 0/1 -> I = 1/2, 2/3, 1
    np.testing.assert_allclose(rep.inconsistency, [0.5, 2 / 3, 1.0], atol=1e-6)
    np.testing.assert_allclose(rep.normalised, [0.5, 2 / 3, 1.0], atol=1e-6)
    np.testing.assert_allclose(rep.iou_large, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(rep.iou_small, [0.5, 1 / 3, 0.0], atol=1e-6)
    assert rep.spearman == pytest.approx(1.0)  # the gap ranks classes exactly as I'_c does
    assert rep.images == 2
    assert "Spearman" in rep.table()
    assert rep.to_dict()["per_class"]["c"]["gap"] == pytest.approx(1.0)


def test_report_without_labels_and_plot(tmp_path):
    large = FixedPrediction(torch.tensor([[0, 1]]), 2)
    small = FixedPrediction(torch.tensor([[0, 0]]), 2)
    rep = inconsistency_report(large, small, [{"img": torch.zeros(1, 3, 1, 2)}], ["a", "b"])
    assert rep.gap is None and rep.spearman is None
    np.testing.assert_allclose(rep.inconsistency, [0.5, 1.0])
    png = plot_report(rep, tmp_path / "inc.png")
    assert png.stat().st_size > 1000
