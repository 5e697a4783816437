import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics


def test_fid_hand_worked():
    # means 1 and 3, variances 2 and 8: (1 - 3)^2 + 2 + 8 - 2 sqrt(2 * 8) = 6
    assert metrics.frechet_inception_distance([[0.0], [2.0]], [[1.0], [5.0]]) == pytest.approx(6.0)


def test_fid_of_a_set_with_itself_and_a_shifted_copy():
    features = np.random.default_rng(0).normal(size=(50, 8))
    assert metrics.frechet_inception_distance(features, features) == pytest.approx(0, abs=1e-9)
    shift = np.arange(8) / 4
    assert metrics.frechet_inception_distance(features, features + shift) == pytest.approx(np.sum(shift**2))


def test_fid_is_symmetric_non_negative_and_sample_order_free():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 6)), rng.normal(0.5, 2, size=(30, 6))
    fid = metrics.frechet_inception_distance(real, fake)
    assert fid == pytest.approx(metrics.frechet_inception_distance(fake, real), rel=1e-10) and fid > 0
    assert fid == pytest.approx(metrics.frechet_inception_distance(rng.permutation(real), fake), rel=1e-10)
    # fewer samples than features: singular covariances are fine
    assert metrics.frechet_inception_distance(real[:4], fake[:3]) > 0


def test_inception_score_bounds():
    assert metrics.inception_score(np.zeros((10, 4))) == (pytest.approx(1.0), 0.0)
    confident = np.tile(100 * np.eye(4), (3, 1))  # each class predicted surely, equally often
    assert metrics.inception_score(confident)[0] == pytest.approx(4.0)
    mean, std = metrics.inception_score(confident, splits=3)
    assert (mean, std) == (pytest.approx(4.0), pytest.approx(0.0, abs=1e-9))
    logits = np.random.default_rng(2).normal(0, 3, (100, 10))
    assert 1 < metrics.inception_score(logits)[0] < 10


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.frechet_inception_distance([[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]]), "at least 2 samples"),
        (lambda: metrics.frechet_inception_distance(np.zeros((3, 2)), np.zeros((3, 4))), "has 4 features"),
        (lambda: metrics.frechet_inception_distance(np.zeros(3), np.zeros(3)), "real_features must be 2-D"),
        (lambda: metrics.inception_score(np.zeros((3, 2)), splits=4), "fewer than splits"),
        (lambda: metrics.inception_score([[np.inf, 0.0]]), "logits has NaN or infinite"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["generation"])
def test_agrees_with_reference(name, seed):
    assert parity.run("generation", name, seed) <= parity.TOLERANCE
