import math

import pytest
import torch

from duda.errors import DudaError
from duda.uda import classmix_masks, mix, pick_half


def _src_gt() -> torch.Tensor:
    image0 = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]])
    image1 = torch.tensor([[3, 3, 3, 3], [3, 3, 3, 3], [0, 0, 0, 0], [5, 5, 5, 5]])
    return torch.stack([image0, image1])


def test_batch_classes_pick_ceil_half_and_mask_is_class_membership():
    gt = _src_gt()  # batch classes without 255 {0, 1, 2, 3, 5}: n = 5 -> 3 picked per image
    for seed in range(20):
        masks = classmix_masks(gt, torch.Generator().manual_seed(seed), include_ignore=False)
        assert masks.shape == (2, 1, 4, 4) and masks.dtype == torch.float32
        # Rebuild the picked set from the mask: pasted pixels' classes; it must be closed
        # under class membership (every pixel of a picked class is pasted).
        for image, mask in zip(gt, masks[:, 0], strict=True):
            pasted = set(image[mask.bool()].tolist())
            assert 255 not in pasted
            for cls in pasted:
                assert bool(mask[image == cls].all())
            assert len(pasted) <= math.ceil(5 / 2)


def test_same_seed_same_masks_and_different_seeds_differ():
    gt = _src_gt()
    a = classmix_masks(gt, torch.Generator().manual_seed(1))
    b = classmix_masks(gt, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    masks = [classmix_masks(gt, torch.Generator().manual_seed(s)) for s in range(10)]
    results = {tuple(m.flatten().tolist()) for m in masks}
    assert len(results) > 1


def test_per_image_classes_pick_ceil_half_of_own_classes():
    gt = _src_gt()  # image 0: {0,1,2} -> 2 classes pasted; image 1: {0,3,5} -> 2 classes pasted
    for seed in range(10):
        masks = classmix_masks(
            gt, torch.Generator().manual_seed(seed), per_batch_classes=False, include_ignore=False
        )
        for image, mask in zip(gt, masks[:, 0], strict=True):
            assert len(set(image[mask.bool()].tolist())) == 2


def test_ignore_label_is_a_candidate_by_default_as_in_the_reference():
    gt = torch.full((1, 2, 2), 255)
    gt[0, 0, 0] = 4  # candidates {4, 255}: one of the two is picked
    seen = set()
    for seed in range(20):
        mask = classmix_masks(gt, torch.Generator().manual_seed(seed))
        seen.add(int(mask.sum()))
    assert seen == {1, 3}
    # _src_gt: batch classes {0, 1, 2, 3, 5, 255}, n = 6 -> 3 picked; 255 is picked in exactly
    # C(5,2)/C(6,3) = 10/20 = 1/2 of the draws
    hits = sum(
        bool(classmix_masks(_src_gt(), torch.Generator().manual_seed(s))[0, 0, 2:, 2:].all())
        for s in range(400)
    )
    assert 150 < hits < 250
    only_ignore = torch.full((1, 2, 2), 255)
    assert classmix_masks(only_ignore, torch.Generator().manual_seed(0)).sum() == 4  # n=1 -> 1 picked
    assert classmix_masks(only_ignore, torch.Generator().manual_seed(0), include_ignore=False).sum() == 0


def test_mix_images_labels_weights_on_hand_made_example():
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    a_img, b_img = torch.full((1, 3, 2, 2), 2.0), torch.full((1, 3, 2, 2), -1.0)
    img = mix(mask, a_img, b_img)
    assert img[0, 1].tolist() == [[2.0, -1.0], [-1.0, 2.0]]
    labels = mix(mask, torch.tensor([[[3, 3], [255, 255]]]), torch.tensor([[[7, 8], [9, 10]]]))
    assert labels.dtype == torch.int64 and labels.tolist() == [[[3, 8], [9, 255]]]
    weight = mix(mask, torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.25))
    assert weight.tolist() == [[[1.0, 0.25], [0.25, 1.0]]]


def test_pick_half_draws_ceil_half_distinct_classes():
    classes = torch.tensor([0, 1, 2, 3, 5])
    for seed in range(10):
        picked = pick_half(classes, torch.Generator().manual_seed(seed))
        assert picked.numel() == 3 and len(set(picked.tolist())) == 3
        assert set(picked.tolist()) <= {0, 1, 2, 3, 5}
    assert pick_half(torch.tensor([4, 9]), torch.Generator().manual_seed(0)).numel() == 1
    assert pick_half(torch.tensor([4]), torch.Generator().manual_seed(0)).tolist() == [4]
    assert pick_half(torch.tensor([], dtype=torch.long), torch.Generator()).numel() == 0


def test_mix_rejects_mismatched_shapes():
    with pytest.raises(DudaError, match="mask"):
        mix(torch.ones(1, 1, 3, 3), torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2))
    with pytest.raises(DudaError, match="shape"):
        mix(torch.ones(1, 1, 2, 2), torch.ones(1, 3, 2, 2), torch.ones(1, 2, 2, 2))
