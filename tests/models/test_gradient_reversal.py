import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse.models.gradient_reversal import (
    AnnealedLearningRate,
    GradientReversal,
    GradientReversalSchedule,
    reversal_strength,
)


def test_forward_is_identity_and_gradient_is_minus_lambda_times_upstream():
    layer = GradientReversal(strength=0.7)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 5)), tf.float32)
    upstream = tf.constant(np.random.default_rng(1).normal(size=(4, 5)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * upstream)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -0.7 * upstream.numpy(), rtol=1e-6)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 1


def test_lambda_changes_reach_a_compiled_function_without_retracing():
    layer = GradientReversal(strength=0.0)
    layer.build((None, 3))
    traces = []

    @tf.function
    def gradient(x):
        traces.append(1)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, x)

    x = tf.ones((2, 3))
    np.testing.assert_allclose(gradient(x).numpy(), 0.0)
    layer.strength.assign(2.5)
    np.testing.assert_allclose(gradient(x).numpy(), -2.5)
    assert len(traces) == 1


def test_keras_round_trip_keeps_lambda(tmp_path):
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1)(GradientReversal(strength=0.2, name="grl")(inputs))
    model = keras.Model(inputs, outputs)
    model.get_layer("grl").strength.assign(0.9)
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert float(reloaded.get_layer("grl").strength.numpy()) == pytest.approx(0.9)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_schedules_follow_the_paper():
    assert reversal_strength(0.0) == 0.0
    assert reversal_strength(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert reversal_strength(0.1) == pytest.approx(0.4621, abs=1e-4)
    rate = AnnealedLearningRate(0.01, total_steps=100)
    assert float(rate(0)) == pytest.approx(0.01)
    assert float(rate(100)) == pytest.approx(0.01 / 11**0.75, rel=1e-5)
    assert float(rate(500)) == pytest.approx(float(rate(100)))  # progress is capped at 1
    assert AnnealedLearningRate.from_config(rate.get_config()).get_config() == rate.get_config()


def test_schedule_callback_sets_lambda_each_step_of_fit():
    inputs = keras.Input((2,))
    layer = GradientReversal(name="grl")
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    schedule = GradientReversalSchedule([layer], total_steps=8)
    model.fit(np.ones((16, 2)), np.ones((16, 1)), batch_size=4, epochs=2, callbacks=[schedule], verbose=0)
    # set before steps 0 and 4 (epoch starts) and after the last step (8)
    assert [step for step, _ in schedule.history] == [0, 4, 8]
    assert schedule.history[0][1] == 0.0 and schedule.history[1][1] == pytest.approx(reversal_strength(0.5))
    assert float(layer.strength.numpy()) == pytest.approx(reversal_strength(1.0))
    fixed = GradientReversalSchedule([layer], total_steps=8, fixed=0.0)
    model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=4, epochs=1, callbacks=[fixed], verbose=0)
    assert float(layer.strength.numpy()) == 0.0
