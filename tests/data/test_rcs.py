import math

import numpy as np
import pytest

from duda.data.rcs import RareClassSampler, RCSConfig, rcs_class_probs, stats_matrix
from duda.errors import DatasetError

STATS = np.array(
    [
        [4000, 0, 100, 0],
        [6000, 3500, 0, 0],
        [0, 3001, 0, 0],
    ]
)  # class 2 never exceeds 3000 px in an image, class 3 is absent


def test_probabilities_hand_computed():
    s = RareClassSampler(STATS, 4, temperature=0.1, min_pixels=3000)
    total = 10000 + 6501 + 100
    f0, f1 = 10000 / total, 6501 / total
    e0, e1 = math.exp((1 - f0) / 0.1), math.exp((1 - f1) / 0.1)
    expected = [e0 / (e0 + e1), e1 / (e0 + e1), 0.0, 0.0]
    np.testing.assert_allclose(s.class_probs, expected, rtol=1e-12)


def test_default_parameters_are_daformer_values():
    s = RareClassSampler(STATS, 4)
    assert s.temperature == 0.01 and s.min_pixels == 3000
    assert RCSConfig() == RCSConfig(temperature=0.01, min_pixels=3000, min_crop_ratio=0.5, crop_tries=10)
    assert s.class_probs[1] > 0.99  # the rarer eligible class dominates at T = 0.01


def test_rcs_class_probs_over_present_classes():
    p = rcs_class_probs(np.array([3.0, 1.0, 0.0]), temperature=1.0)
    e0, e1 = math.exp(0.25), math.exp(0.75)
    np.testing.assert_allclose(p, [e0 / (e0 + e1), e1 / (e0 + e1), 0.0])


def test_sample_returns_only_candidate_images():
    s = RareClassSampler(STATS, 4, temperature=1.0, min_pixels=3000)
    rng = np.random.default_rng(0)
    draws = [s.sample(rng) for _ in range(300)]
    assert {c for _, c in draws} == {0, 1}
    assert {i for i, c in draws if c == 0} == {0, 1}
    assert {i for i, c in draws if c == 1} == {1, 2}


def test_stats_from_dicts_and_bad_shapes():
    assert stats_matrix([{0: 5}, {2: 7}], 3).tolist() == [[5, 0, 0], [0, 0, 7]]
    with pytest.raises(DatasetError, match=r"expected \(N, 5\)"):
        RareClassSampler(STATS, 5)
    with pytest.raises(DatasetError, match="no labelled pixels"):
        RareClassSampler(np.zeros((2, 3)), 3)
