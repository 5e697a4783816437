import keras
import numpy as np
import tensorflow as tf

from tfcourse.from_scratch.batch_norm import BatchNorm


def test_matches_keras_batch_normalization_in_both_modes():
    rng = np.random.default_rng(0)
    ours, reference = BatchNorm(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    weights = tf.constant(rng.normal(size=(16, 4, 5)), tf.float32)
    for _ in range(5):
        x = tf.constant(rng.normal(3.0, 2.0, (16, 4, 5)), tf.float32)  # normalised over batch and axis 1
        for training in (True, False):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                y, y_reference = ours(x, training=training), reference(x, training=training)
                loss, loss_reference = tf.reduce_sum(y * weights), tf.reduce_sum(y_reference * weights)
            np.testing.assert_allclose(y, y_reference, atol=1e-5)
            for g, r in zip(tape.gradient(loss, [x, ours.gamma, ours.beta]),
                            tape.gradient(loss_reference, [x, reference.gamma, reference.beta])):
                np.testing.assert_allclose(g, r, atol=1e-5 * float(tf.reduce_max(tf.abs(r))))
    np.testing.assert_allclose(ours.moving_mean, reference.moving_mean, atol=1e-6)
    np.testing.assert_allclose(ours.moving_variance, reference.moving_variance, atol=1e-6)
    assert not np.allclose(ours.moving_mean, 0)  # the statistics did move


def test_training_output_is_standardised_per_feature():
    x = tf.constant(np.random.default_rng(1).normal(5.0, 3.0, (256, 3)), tf.float32)
    y = BatchNorm(epsilon=0.0)(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1, atol=1e-4)


def test_keras_round_trip_in_a_model(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, BatchNorm(momentum=0.8, name="bn")(inputs))
    model(np.ones((4, 3), "float32"), training=True)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.get_layer("bn").momentum == 0.8
    x = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(restored(x), model(x), atol=1e-6)
