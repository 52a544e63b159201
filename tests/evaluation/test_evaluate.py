"""evaluate() over a loader, and scoring folders of trainId PNGs (incl. the bad-input errors)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from duda.errors import DatasetError
from duda.evaluation.evaluate import evaluate, read_label_png, score_folders


def write_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)
    return path


class ChannelArgmax(nn.Module):
    """Logits = the first three input channels, at stride 2: class = the brightest channel."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)  # shows whether evaluation switched to eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(nn.functional.avg_pool2d(x, 2))


def test_evaluate_upsamples_to_label_size_and_restores_training_mode():
    img = torch.zeros(1, 3, 8, 8)
    img[0, 0, :, :4] = 1.0  # left half: class 0
    img[0, 1, :, 4:] = 1.0  # right half: class 1
    gt = torch.zeros(1, 16, 16, dtype=torch.long)
    gt[0, :, 8:] = 1
    gt[0, 0, :] = 255
    model = ChannelArgmax().train()
    seen = {}
    loader = [{"img": img, "gt": gt, "name": "a"}, {"img": img, "gt": gt[0], "name": ["b"]}]
    res = evaluate(
        model, loader, num_classes=3, progress=False, on_prediction=lambda n, p: seen.setdefault(n, p)
    )
    np.testing.assert_allclose(res.iou[:2], [1.0, 1.0])
    assert np.isnan(res.iou[2]) and res.miou == 1.0
    assert res.num_pixels == 2 * 15 * 16
    assert model.training  # restored after evaluation
    assert sorted(seen) == ["a", "b"] and seen["a"].shape == (16, 16) and seen["a"].dtype == np.uint8
    slide = evaluate(ChannelArgmax(), loader, 3, mode="slide", crop=(4, 4), stride=(2, 2), progress=False)
    assert slide.miou == 1.0


@pytest.fixture
def folders(tmp_path):
    """Two predictions and labels (nested like ACDC), with hand-countable agreement."""
    gt_a = np.array([[0, 0, 1], [1, 255, 2]])
    pred_a = np.array([[0, 1, 1], [1, 0, 2]])
    gt_b = np.array([[2, 2], [2, 0]])
    pred_b = np.array([[2, 2], [0, 0]])
    write_png(tmp_path / "gt/night/GOPR1/a_gt_labelTrainIds.png", gt_a)
    write_png(tmp_path / "gt/night/GOPR1/a_gt_labelIds.png", gt_a + 7)  # not a trainId map: skipped
    write_png(tmp_path / "gt/night/GOPR2/b_gt_labelTrainIds.png", gt_b)
    write_png(tmp_path / "pred/a_rgb_anon.png", pred_a)
    write_png(tmp_path / "pred/b_rgb_anon.png", pred_b)
    return tmp_path


def score(root, **kw):
    return score_folders(
        root / "pred",
        root / "gt",
        num_classes=3,
        pred_suffix="_rgb_anon",
        gt_suffix="_gt_labelTrainIds",
        **kw,
    )


def test_score_folders_matches_by_stem_and_counts_pixels(folders):
    res = score(folders)
    # pairs a: (0,0) (0,1) (1,1) / (1,1) (2,2), one ignored; b: (2,2) (2,2) / (2,0) (0,0)
    # class 0: gt 3, pred 3, inter 2 -> 2/4; class 1: gt 2, pred 3, inter 2 -> 2/3;
    # class 2: gt 4, pred 3, inter 3 -> 3/4
    np.testing.assert_allclose(res.iou, [1 / 2, 2 / 3, 3 / 4])
    assert res.num_pixels == 9 and res.aacc == pytest.approx(7 / 9)


def test_missing_predictions_are_listed(folders):
    (folders / "pred/b_rgb_anon.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 labels .* have no prediction .*: b \("):
        score(folders)


def test_extra_predictions_are_an_error_unless_allowed(folders):
    write_png(folders / "pred/c_rgb_anon.png", np.zeros((2, 2)))
    with pytest.raises(DatasetError, match="1 predictions .* have no label .*: c"):
        score(folders)
    assert score(folders, allow_extra_preds=True).num_pixels == 9


def test_wrong_suffix_names_the_keys(folders):
    with pytest.raises(DatasetError, match="no prediction.*'a_rgb_anon'"):
        score_folders(folders / "pred", folders / "gt", 3, gt_suffix="_gt_labelTrainIds")


def test_size_mismatch_names_the_pair_and_sizes(folders):
    write_png(folders / "pred/b_rgb_anon.png", np.zeros((2, 5)))
    with pytest.raises(DatasetError, match=r"b_rgb_anon.png is 5×2 .*b_gt_labelTrainIds.png is 2×2"):
        score(folders)


def test_unreadable_and_colour_files(folders):
    (folders / "pred/a_rgb_anon.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="a_rgb_anon.png: cannot read"):
        score(folders)
    write_png(folders / "pred/a_rgb_anon.png", np.zeros((2, 3, 3)))
    with pytest.raises(DatasetError, match="a_rgb_anon.png: expected a single-channel.*RGB"):
        score(folders)


def test_label_ids_instead_of_train_ids(folders):
    with pytest.raises(DatasetError, match="labelIds instead of trainIds"):
        score_folders(
            folders / "pred",
            folders / "gt",
            3,
            pred_suffix="_rgb_anon",
            gt_suffix="_gt_labelIds",
            allow_extra_preds=True,
        )


def test_missing_folder_and_palette_png(tmp_path):
    with pytest.raises(DatasetError, match="prediction folder .*: no PNG files found"):
        score_folders(tmp_path, tmp_path)
    write_png(tmp_path / "pred" / "x.png", np.zeros((2, 2)))
    with pytest.raises(DatasetError, match="label folder not found: .*nope"):
        score_folders(tmp_path / "pred", tmp_path / "nope")
    pal = Image.fromarray(np.array([[0, 1], [2, 255]], dtype=np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.save(tmp_path / "p.png")
    assert read_label_png(tmp_path / "p.png").tolist() == [[0, 1], [2, 255]]
