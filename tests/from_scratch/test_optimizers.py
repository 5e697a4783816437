import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse.from_scratch import optimizers


def _model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden))


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 3)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # 10 steps an epoch


@pytest.mark.parametrize(
    "optimizer",
    [
        optimizers.SGD(0.1),
        optimizers.Momentum(0.05, momentum=0.9),
        optimizers.RMSprop(0.01, rho=0.8, epsilon=1e-6),
        optimizers.Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6),
    ],
    ids=["sgd", "momentum", "rmsprop", "adam"],
)
def test_matches_keras_over_100_steps_in_fit(optimizer):
    ours, reference = _model(), _model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ours.compile(optimizer, loss)
    reference.compile(optimizers.keras_twin(optimizer), loss)
    initial = [w.copy() for w in ours.get_weights()]
    history = ours.fit(_data(), epochs=10, verbose=0, shuffle=False).history
    reference_history = reference.fit(_data(), epochs=10, verbose=0, shuffle=False).history
    assert int(ours.optimizer.iterations) == 100
    assert history["loss"][-1] < history["loss"][0]  # it trains
    assert max(np.abs(a - b).max() for a, b in zip(initial, ours.get_weights())) > 1e-2  # it moved the weights
    for a, b in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    np.testing.assert_allclose(history["loss"], reference_history["loss"], atol=1e-5, rtol=0)


def test_adam_bias_correction_on_the_first_step():
    variable = keras.Variable([1.0, -2.0])
    optimizer = optimizers.Adam(0.1)
    optimizer.apply([tf.constant([0.5, -3.0])], [variable])
    # step 1: m = 0.1 g, v = 0.001 g^2, step size 0.1 * sqrt(0.001) / 0.1, so the update is ~0.1 * sign(g)
    np.testing.assert_allclose(variable.numpy(), [0.9, -1.9], atol=1e-5)


def test_optimizer_config_round_trip():
    optimizer = optimizers.RMSprop(0.02, rho=0.7, epsilon=1e-5)
    restored = optimizers.RMSprop.from_config(optimizer.get_config())
    assert (float(restored.learning_rate), restored.rho, restored.epsilon) == pytest.approx((0.02, 0.7, 1e-5))
