import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics

GENUINE, IMPOSTOR = [0.9, 0.8, 0.4], [0.1, 0.5, 0.3]


def test_far_frr_hand_worked():
    far, frr = metrics.far_frr(GENUINE, IMPOSTOR, [0.5, 0.45, 1.0, 0.0])
    np.testing.assert_allclose(far, [1 / 3, 1 / 3, 0, 1])  # accepted when score >= threshold
    np.testing.assert_allclose(frr, [1 / 3, 1 / 3, 1, 0])


def test_eer_on_an_operating_point():
    # (FAR, FRR) at 0.9, 0.8, 0.5: (0, 2/3), (0, 1/3), (1/3, 1/3)
    assert metrics.equal_error_rate(GENUINE, IMPOSTOR) == (pytest.approx(1 / 3), 0.5)


def test_eer_interpolated_between_operating_points():
    # at 3: FAR 0, FRR 1/2; at 2: FAR 1, FRR 1/2 -> FAR = FRR = 1/2 halfway, threshold 2.5
    assert metrics.equal_error_rate([3.0, 1.0], [2.0]) == (0.5, 2.5)


def test_eer_perfect_separation_and_all_tied():
    assert metrics.equal_error_rate([1.0, 2.0], [-1.0, 0.0]) == (0.0, 1.0)
    assert metrics.equal_error_rate([1.0, 1.0], [1.0]) == (0.5, 1.0)  # next to reject-all: the highest score


def test_roc_curve_hand_worked():
    far, tar, thresholds = metrics.verification_roc_curve(GENUINE, IMPOSTOR)
    np.testing.assert_allclose(far, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.5, 0.4, 0.3, 0.1])


def test_order_and_monotone_transform_invariance():
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(1, 1, 50), rng.normal(0, 1, 80)
    eer, threshold = metrics.equal_error_rate(genuine, impostor)
    assert metrics.equal_error_rate(rng.permutation(genuine), rng.permutation(impostor)) == (eer, threshold)
    assert metrics.equal_error_rate(np.exp(genuine), np.exp(impostor))[0] == pytest.approx(eer, abs=1e-12)
    far, frr = metrics.far_frr(genuine, impostor, np.linspace(-3, 3, 50))
    assert np.all(np.diff(far) <= 0) and np.all(np.diff(frr) >= 0)
    far_at, frr_at = metrics.far_frr(genuine, impostor, threshold)
    assert min(far_at, frr_at) - 1 / 50 <= eer <= max(far_at, frr_at) + 1 / 50 and 0.1 < eer < 0.5


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.equal_error_rate([], [0.1]), "genuine_scores is empty"),
        (lambda: metrics.equal_error_rate([0.2], []), "impostor_scores is empty"),
        (lambda: metrics.far_frr([[0.2]], [0.1], 0.5), "genuine_scores must be 1-D"),
        (lambda: metrics.far_frr([0.2], [np.nan], 0.5), "impostor_scores has NaN"),
        (lambda: metrics.far_frr([0.2], [0.1], "high"), "thresholds must hold real numbers"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["verification"])
def test_agrees_with_reference(name, seed):
    assert parity.run("verification", name, seed) <= parity.TOLERANCE
