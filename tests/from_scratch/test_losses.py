import keras
import numpy as np
import pytest

from tfcourse.from_scratch import losses


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 64)
    return {
        "one_hot": np.eye(5, dtype="float32")[labels],
        "scores": rng.normal(0, 3, (64, 5)).astype("float32"),
        "probabilities": rng.uniform(0.0, 1, (64, 5)).astype("float32"),
        "signs": rng.choice([-1.0, 1.0], (64, 5)).astype("float32"),
        "targets": rng.normal(size=(64, 5)).astype("float32"),
    }


def test_each_loss_matches_keras_on_random_inputs(batch):
    b = batch
    checks = [
        (losses.mean_squared_error(b["targets"], b["scores"]), keras.losses.mean_squared_error(b["targets"], b["scores"])),
        (losses.categorical_crossentropy_from_logits(b["one_hot"], b["scores"]),
         keras.losses.categorical_crossentropy(b["one_hot"], b["scores"], from_logits=True)),
        (losses.categorical_crossentropy_from_probabilities(b["one_hot"], b["probabilities"]),
         keras.losses.categorical_crossentropy(b["one_hot"], b["probabilities"])),
        (losses.binary_hinge(b["signs"], b["scores"]), keras.losses.hinge(b["signs"], b["scores"])),
        (losses.binary_hinge((b["signs"] + 1) / 2, b["scores"]), keras.losses.hinge((b["signs"] + 1) / 2, b["scores"])),
        (losses.multiclass_hinge(b["one_hot"], b["scores"]), keras.losses.categorical_hinge(b["one_hot"], b["scores"])),
    ]
    for ours, reference in checks:
        assert np.shape(ours) == (64,)
        np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=1e-6)


def test_hand_worked_values():
    y = np.array([[0.0, 1.0, 0.0]], "float32")
    s = np.array([[2.0, 1.0, -1.0]], "float32")
    expected_ce = -(1.0 - np.log(np.exp(2.0) + np.exp(1.0) + np.exp(-1.0)))
    np.testing.assert_allclose(losses.categorical_crossentropy_from_logits(y, s), [expected_ce], rtol=1e-6)
    np.testing.assert_allclose(losses.multiclass_hinge(y, s), [1 + 2.0 - 1.0])  # 1 + best wrong - true
    np.testing.assert_allclose(losses.binary_hinge(np.array([[1.0, -1.0]]), np.array([[0.3, 0.5]])), [(0.7 + 1.5) / 2])
    np.testing.assert_allclose(losses.mean_squared_error(np.array([[1.0, 2.0]]), np.array([[0.0, 4.0]])), [2.5])


def test_crossentropy_from_huge_logits_stays_finite():
    y = np.array([[1.0, 0.0]], "float32")
    assert np.isfinite(losses.categorical_crossentropy_from_logits(y, np.array([[1000.0, -1000.0]], "float32"))).all()
    np.testing.assert_allclose(losses.categorical_crossentropy_from_logits(y, np.array([[-500.0, 500.0]], "float32")), [1000.0])
