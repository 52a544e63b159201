import math

import pytest

from duda.errors import DudaError
from duda.uda import distill_weight


def test_linear_ramp_over_half_of_stage_one():
    assert distill_weight(0, 1000) == 0.0
    assert distill_weight(250, 1000) == 0.5
    assert distill_weight(500, 1000) == 1.0
    assert distill_weight(900, 1000) == 1.0
    assert distill_weight(100, 1000, ramp=0.2) == 0.5


def test_sigmoid_ramp_rescaled_logistic():
    assert distill_weight(0, 1000, kind="sigmoid") == pytest.approx(0.0, abs=1e-12)
    assert distill_weight(250, 1000, kind="sigmoid") == pytest.approx(0.5)
    assert distill_weight(500, 1000, kind="sigmoid") == pytest.approx(1.0)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    x = 0.2  # step 100 of a 500-step window
    expected = (sig(10 * (x - 0.5)) - sig(-5)) / (sig(5) - sig(-5))
    assert distill_weight(100, 1000, kind="sigmoid") == pytest.approx(expected)
    assert distill_weight(100, 1000, kind="sigmoid") < distill_weight(100, 1000)  # slower start


def test_constant_and_no_window():
    assert distill_weight(0, 1000, kind="constant") == 1.0
    assert distill_weight(0, 1000, ramp=0.0) == 1.0


def test_bad_arguments():
    with pytest.raises(DudaError, match="kind"):
        distill_weight(0, 10, kind="cosine")
    with pytest.raises(DudaError, match="ramp"):
        distill_weight(0, 10, ramp=1.5)
