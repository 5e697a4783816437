import math

import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics


def test_hand_worked():
    result = metrics.depth_metrics([1.0, 1.0, 8.0], [1.0, 2.0, 4.0])
    assert result["rmse"] == pytest.approx(math.sqrt((0 + 1 + 16) / 3))
    assert result["mae"] == pytest.approx((0 + 1 + 4) / 3)
    assert result["abs_rel"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert result["sq_rel"] == pytest.approx((0 + 0.5 + 4) / 3)
    # ratios 1, 2, 2: only the first is below 1.25, 1.5625 and 1.953125
    assert (result["delta1"], result["delta2"], result["delta3"]) == (pytest.approx(1 / 3),) * 3


def test_pixels_without_ground_truth_are_left_out():
    result = metrics.depth_metrics([[1.0, 5.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 2.0]])
    assert result["rmse"] == 0.0 and result["delta1"] == 1.0
    masked = metrics.depth_metrics([1.0, 3.0], [1.0, 2.0], valid=[True, False])
    assert masked["abs_rel"] == 0.0
    assert all(math.isnan(v) for v in metrics.depth_metrics([1.0], [0.0]).values())


def test_bounds_and_pixel_order():
    rng = np.random.default_rng(0)
    target = rng.uniform(1, 50, 200)
    predicted = target * rng.lognormal(0, 0.3, 200)
    result = metrics.depth_metrics(predicted, target)
    order = rng.permutation(200)
    assert metrics.depth_metrics(predicted[order], target[order]) == pytest.approx(result)
    assert 0 < result["delta1"] < result["delta2"] < result["delta3"] <= 1
    assert result["mae"] <= result["rmse"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.depth_metrics([0.0, 1.0], [1.0, 1.0]), "predicted must be > 0"),
        (lambda: metrics.depth_metrics([1.0, 1.0], [-1.0, 1.0], valid=[True, True]), "target must be > 0"),
        (lambda: metrics.depth_metrics([1.0], [1.0, 1.0]), "same shape"),
        (lambda: metrics.depth_metrics([1.0], [1.0], valid=[0.5]), "valid must be binary"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["depth"])
def test_agrees_with_reference(name, seed):
    assert parity.run("depth", name, seed) <= parity.TOLERANCE
