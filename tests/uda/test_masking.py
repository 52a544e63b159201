import pytest
import torch

from duda.errors import DudaError
from duda.uda import apply_mask, block_mask


def test_visible_ratio_about_thirty_percent_over_many_blocks():
    mask = block_mask(4, 512, 512, torch.Generator().manual_seed(0), block_size=32, ratio=0.7)
    assert mask.shape == (4, 1, 512, 512)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # 4 * 16 * 16 = 1024 blocks: standard error of the visible share is about 0.014
    assert abs(mask.mean().item() - 0.3) < 0.05


def test_blocks_are_constant_squares():
    mask = block_mask(2, 64, 96, torch.Generator().manual_seed(1), block_size=32, ratio=0.5)
    blocks = mask.view(2, 1, 2, 32, 3, 32)
    assert torch.equal(blocks.amax(dim=(3, 5)), blocks.amin(dim=(3, 5)))


def test_crop_not_multiple_of_block_size():
    mask = block_mask(1, 50, 70, torch.Generator().manual_seed(2), block_size=32)
    assert mask.shape == (1, 1, 50, 70)  # round(50/32)=2, round(70/32)=2 cells, stretched
    tiny = block_mask(1, 8, 8, torch.Generator().manual_seed(2), block_size=32)
    assert tiny.shape == (1, 1, 8, 8) and tiny.unique().numel() == 1


def test_ratio_extremes_and_reproducibility():
    assert block_mask(1, 64, 64, torch.Generator(), ratio=0.0).min() == 1
    assert block_mask(1, 64, 64, torch.Generator(), ratio=1.0).max() == 0
    a = block_mask(2, 64, 64, torch.Generator().manual_seed(3))
    b = block_mask(2, 64, 64, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_apply_mask_zeroes_in_normalised_space():
    img = torch.full((1, 3, 2, 2), 1.5)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert apply_mask(img, mask)[0, 2].tolist() == [[1.5, 0.0], [0.0, 1.5]]
    with pytest.raises(DudaError, match="mask"):
        apply_mask(img, torch.ones(1, 1, 3, 3))
