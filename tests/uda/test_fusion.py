import pytest
import torch

from duda.errors import DudaError
from duda.uda import fuse_probs, fuse_teacher_logits, normalised_weights


def test_equal_and_given_weights():
    a = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    b = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    assert fuse_probs([a, b]).flatten().tolist() == [0.5, 0.5]
    assert fuse_probs([a, b], weights=[3, 1]).flatten().tolist() == [0.75, 0.25]
    assert normalised_weights(2, [2.0, 2.0]) == [0.5, 0.5]


def test_bad_weights_and_shapes():
    a = torch.ones(1, 2, 1, 1) / 2
    with pytest.raises(DudaError, match="weights"):
        fuse_probs([a, a], weights=[1.0])
    with pytest.raises(DudaError, match="weights"):
        fuse_probs([a, a], weights=[1.0, -1.0])
    with pytest.raises(DudaError, match="shape"):
        fuse_probs([a, torch.ones(1, 3, 1, 1)])
    with pytest.raises(DudaError, match="at least one"):
        fuse_probs([])


def test_fuse_teacher_logits_of_different_strides():
    coarse = torch.zeros(1, 2, 2, 2)
    coarse[:, 0] = 10.0  # softmax ~ (1, 0) everywhere
    fine = torch.zeros(1, 2, 4, 4)  # softmax (0.5, 0.5)
    fused = fuse_teacher_logits([coarse, fine], (8, 8))
    assert fused.shape == (1, 2, 8, 8)
    assert torch.allclose(fused.sum(dim=1), torch.ones(1, 8, 8))
    assert torch.allclose(fused[:, 0], torch.full((1, 8, 8), 0.5 * torch.sigmoid(torch.tensor(10.0)) + 0.25))
    with pytest.raises(DudaError, match="K"):
        fuse_teacher_logits([coarse, torch.zeros(1, 3, 4, 4)], (8, 8))
