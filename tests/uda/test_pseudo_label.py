import pytest
import torch

from duda.errors import DudaError
from duda.uda import ignore_rows_mask, pseudo_label


def _probs() -> torch.Tensor:
    # 2 images, 2 classes, 2x2 pixels; max probs: image 0 -> .99 .97 .60 .968 ; image 1 -> .9 .8 .7 .99
    p0 = torch.tensor([[0.99, 0.03], [0.40, 0.968]])
    p1 = torch.tensor([[0.1, 0.8], [0.7, 0.01]])
    class0 = torch.stack([p0, p1])
    return torch.stack([class0, 1 - class0], dim=1)


def test_labels_and_batch_weight():
    labels, weight = pseudo_label(_probs(), threshold=0.968)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[[0, 1], [1, 0]], [[1, 0], [0, 1]]]
    # confident pixels: .99, .97, .968 in image 0 and .99 in image 1 -> 4 of 8
    assert weight.shape == (2, 2, 2)
    assert torch.allclose(weight, torch.full((2, 2, 2), 0.5))


def test_per_image_weight():
    _, weight = pseudo_label(_probs(), threshold=0.968, per_image=True)
    assert torch.allclose(weight[0], torch.full((2, 2), 0.75))
    assert torch.allclose(weight[1], torch.full((2, 2), 0.25))


def test_valid_mask_zeroes_weight_but_not_the_fraction():
    valid = torch.tensor([[[1, 0], [1, 1]], [[0, 0], [1, 1]]]).float().unsqueeze(1)
    _, weight = pseudo_label(_probs(), valid=valid)
    assert weight.tolist() == [[[0.5, 0.0], [0.5, 0.5]], [[0.0, 0.0], [0.5, 0.5]]]


def test_valid_mask_shape_checked():
    with pytest.raises(DudaError, match="valid"):
        pseudo_label(_probs(), valid=torch.ones(2, 3, 3))


def test_ignore_rows_mask():
    mask = ignore_rows_mask((1, 6, 2), top=1, bottom=2)
    assert mask[0, :, 0].tolist() == [0, 1, 1, 1, 0, 0]
    assert ignore_rows_mask((1, 4, 2), top=0, bottom=0).min() == 1
    assert ignore_rows_mask((2, 512, 512)).sum() == 2 * 512 * (512 - 135)


def test_bfloat16_probs_give_float32_weight():
    labels, weight = pseudo_label(_probs().bfloat16())
    assert weight.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.allclose(weight, torch.full((2, 2, 2), 0.5))
