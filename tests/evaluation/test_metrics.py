"""IoUMetric / EvalResult on hand-made predictions with hand-computed scores."""

import json
import math

import numpy as np
import pytest
import torch

from duda.errors import DatasetError
from duda.evaluation.metrics import EvalResult, IoUMetric, subset_miou, write_result_json

# Pairs (gt, pred): (0,0) (0,1) (1,1) (1,1) / (2,0) (255,2) (0,0) (1,0)
GT = np.array([[0, 0, 1, 1], [2, 255, 0, 1]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 2, 0, 0]], dtype=np.uint8)


def test_hand_made_iou_acc_and_nan_class():
    metric = IoUMetric(num_classes=4)
    metric.update(PRED, GT)
    res = metric.compute()
    # class 0: gt 3, pred 4, inter 2 -> 2/5; class 1: gt 3, pred 3, inter 2 -> 2/4;
    # class 2: gt 1, pred 0 (its only prediction lies on an ignored pixel) -> 0; class 3: absent -> NaN
    np.testing.assert_allclose(res.iou[:3], [0.4, 0.5, 0.0])
    assert math.isnan(res.iou[3])
    np.testing.assert_allclose(res.acc[:3], [2 / 3, 2 / 3, 0.0])
    assert math.isnan(res.acc[3])
    assert res.miou == pytest.approx(0.3)
    assert res.macc == pytest.approx(4 / 9)
    assert res.aacc == pytest.approx(4 / 7)
    assert res.num_pixels == 7
    assert res.miou16 is None and res.miou13 is None  # only defined for the 19 Cityscapes classes
    assert metric.union.tolist() == [5, 4, 1, 0]
    conf = metric.confusion(PRED, GT)  # rows: label, columns: prediction
    assert conf.tolist() == [[2, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_torch_input_matches_numpy_input():
    a, b = IoUMetric(4), IoUMetric(4)
    a.update(PRED, GT)
    b.update(torch.from_numpy(PRED).long(), torch.from_numpy(GT).long())
    for x, y in zip(a.state_tensors(), b.state_tensors(), strict=True):
        assert torch.equal(x, y)


def test_out_of_range_prediction_counts_as_wrong():
    metric = IoUMetric(2)
    metric.update(np.array([7, 1, 255]), np.array([0, 1, 1]))
    res = metric.compute()
    # class 0: gt 1, never predicted -> 0; class 1: gt 2, pred 1, inter 1 -> 1/2
    np.testing.assert_allclose(res.iou, [0.0, 0.5])
    assert metric.area_pred.tolist() == [0, 1]


def test_label_values_outside_trainids_raise_naming_the_sample():
    metric = IoUMetric(19)
    with pytest.raises(DatasetError, match=r"\{26, 33\} in frankfurt_1.*labelIds"):
        metric.update(
            np.zeros((2, 2), np.uint8), np.array([[26, 33], [0, 255]], np.uint8), name="frankfurt_1"
        )
    with pytest.raises(DatasetError, match="shape"):
        metric.update(np.zeros((2, 3)), np.zeros((2, 2)))


def test_miou16_and_miou13_from_per_class_iou():
    # intersection c, gt area 100, prediction inside the gt -> IoU c/100; class 18 absent -> NaN
    inter = np.arange(19, dtype=np.int64)
    area_gt = np.full(19, 100)
    area_gt[18] = 0
    inter[18] = 0
    res = EvalResult.from_counts(inter, area_gt, inter.copy())
    assert math.isnan(res.iou[18])
    assert res.miou == pytest.approx(sum(range(18)) / 18 / 100)  # 0.085
    # 16: drop 9, 14, 16 -> (153 - 39) / 15; 13: also drop 3, 4, 5 -> (114 - 12) / 12
    assert res.miou16 == pytest.approx(114 / 15 / 100)
    assert res.miou13 == pytest.approx(102 / 12 / 100)
    iou = np.full(19, np.nan)
    iou[9] = 0.5
    assert math.isnan(subset_miou(iou, (9, 14, 16)))  # nothing left: NaN, not a crash


def test_merge_equals_one_metric_over_everything():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 5, (6, 7)) for _ in range(4)]
    gts = [np.where(rng.random((6, 7)) < 0.2, 255, rng.integers(0, 5, (6, 7))) for _ in range(4)]
    whole, part_a, part_b = IoUMetric(5), IoUMetric(5), IoUMetric(5)
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        whole.update(p, g)
        (part_a if i % 2 else part_b).update(p, g)
    part_a.merge(part_b)
    for x, y in zip(whole.state_tensors(), part_a.state_tensors(), strict=True):
        assert torch.equal(x, y)
    np.testing.assert_allclose(whole.compute().iou, part_a.compute().iou)
    with pytest.raises(ValueError, match="merge"):
        part_a.merge(IoUMetric(4))
    part_a.reset()
    assert int(part_a.area_gt.sum()) == 0


def test_table_and_json(tmp_path):
    metric = IoUMetric(4)
    metric.update(PRED, GT)
    res = metric.compute()
    names = ["road", "sidewalk", "building", "wall"]
    table = res.table(names)
    lines = table.splitlines()
    assert lines[0].split() == ["Class", "IoU", "Acc"]
    assert lines[2].split() == ["road", "40.00", "66.67"]
    assert lines[5].split() == ["wall", "-", "-"]
    assert lines[7].split() == ["mIoU", "30.00"] and "mIoU16" not in table
    assert len({len(line) for line in lines[2:6]}) == 1  # aligned
    path = write_result_json(res, tmp_path / "out" / "metrics.json", names, extra={"checkpoint": "x"})
    data = json.loads(path.read_text())
    assert data["checkpoint"] == "x"
    assert data["miou"] == pytest.approx(0.3)
    assert data["per_class"]["wall"] == {"iou": None, "acc": None}
    assert data["per_class"]["sidewalk"]["iou"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="class names"):
        res.table(["a"])
