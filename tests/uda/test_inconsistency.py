import math

import pytest
import torch

from duda.errors import DudaError
from duda.uda import (
    InconsistencyMeter,
    absent_classes,
    class_confusion_counts,
    inconsistency,
    normalised_inconsistency,
    pixel_weights,
    rank_correlation,
)

# 8 pixels, 4 classes (class 3 never predicted).
PRED_A = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 2]])
PRED_B = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])
# class 0: A={0..3}, B={0,1,2}: inter 3, union 4 -> I = 1/4
# class 1: A={4,5}, B={3,4}: inter 1, union 3 -> I = 2/3
# class 2: A={6,7}, B={5,6,7}: inter 2, union 3 -> I = 1/3
# max I = 2/3 -> I' = (3/8, 1, 1/2, 0)


def test_counts_on_hand_made_predictions():
    inter, union = class_confusion_counts(PRED_A, PRED_B, 4)
    assert inter.tolist() == [3, 1, 2, 0]
    assert union.tolist() == [4, 3, 3, 0]


def test_ignore_mask_and_out_of_range_ids():
    ignore = torch.tensor([[True, False, False, False, False, False, False, False]])
    inter, union = class_confusion_counts(PRED_A, PRED_B, 4, ignore)
    assert inter.tolist() == [2, 1, 2, 0] and union.tolist() == [3, 3, 3, 0]
    inter, union = class_confusion_counts(torch.tensor([255, 0]), torch.tensor([0, 0]), 2)
    assert inter.tolist() == [1, 0] and union.tolist() == [2, 0]
    with pytest.raises(DudaError, match="shape"):
        class_confusion_counts(PRED_A, PRED_B[:, :4], 4)


def test_inconsistency_values_absent_and_normalised():
    inter, union = class_confusion_counts(PRED_A, PRED_B, 4)
    values = inconsistency(inter, union)
    assert values.tolist() == pytest.approx([0.25, 2 / 3, 1 / 3, 0.0])
    assert absent_classes(union).tolist() == [False, False, False, True]
    assert normalised_inconsistency(values).tolist() == pytest.approx([0.375, 1.0, 0.5, 0.0])
    assert normalised_inconsistency(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_meter_accumulates_over_batches():
    meter = InconsistencyMeter(4)
    meter.update(PRED_A[:, :4], PRED_B[:, :4])
    meter.update(PRED_A[:, 4:], PRED_B[:, 4:])
    result = meter.compute()
    assert result.intersection.tolist() == [3, 1, 2, 0]
    assert result.union.tolist() == [4, 3, 3, 0]
    assert result.normalised.tolist() == pytest.approx([0.375, 1.0, 0.5, 0.0])
    assert result.absent.tolist() == [False, False, False, True]
    meter.reset()
    assert meter.union.sum() == 0


def test_pixel_weights():
    table = torch.tensor([0.5, 1.0, 2 / 3, 0.0])
    labels = torch.tensor([[[0, 1], [3, 255]]])
    assert pixel_weights(labels, table, gamma=1.0).flatten().tolist() == pytest.approx([1.5, 2.0, 1.0, 1.0])
    assert pixel_weights(labels, table, gamma=2.0, ignore_weight=0.0).flatten().tolist() == pytest.approx(
        [2.0, 3.0, 1.0, 0.0]
    )


def test_rank_correlation():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert rank_correlation(x, torch.tensor([10.0, 20.0, 40.0])) == pytest.approx(1.0)
    assert rank_correlation(x, torch.tensor([3.0, 1.0, 0.0])) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4) -> rho = 4.5 / sqrt(4.5 * 5)
    rho = rank_correlation(torch.tensor([1.0, 2.0, 2.0, 5.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert rho == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    nan_pairs = rank_correlation(torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([2.0, 0.0, 1.0]))
    assert nan_pairs == pytest.approx(-1.0)
    assert math.isnan(rank_correlation(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0])))
