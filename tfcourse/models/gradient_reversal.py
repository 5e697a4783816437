"""Domain-adversarial training pieces (Ganin & Lempitsky 2015, Ganin et al. 2016).

- `GradientReversal`: identity on the forward pass; multiplies the gradient by -λ on the way back.
  λ is a non-trainable variable of the layer, so a callback can change it between steps and the
  compiled (tf.function, tf.distribute) train step reads the new value without retracing.
- `reversal_strength(p)`: the paper's schedule λ_p = 2 / (1 + exp(-γ p)) - 1, p the training
  progress in [0, 1]: 0 at the start (the domain classifier's noisy early signal is ignored),
  close to 1 at the end.
- `GradientReversalSchedule`: the callback that sets λ_p before every training batch.
- `AnnealedLearningRate`: the paper's μ_p = μ0 / (1 + α p)^β.
"""

import math

import keras
import tensorflow as tf


def reversal_strength(progress, gamma=10.0):
    """λ_p = 2 / (1 + exp(-γ p)) - 1 for progress p in [0, 1]."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


@keras.saving.register_keras_serializable(package="tfcourse")
class GradientReversal(keras.layers.Layer):
    """y = x forward; dL/dx = -λ dL/dy backward. `strength` (λ) is a non-trainable variable."""

    def __init__(self, strength=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_strength = float(strength)

    def build(self, input_shape):
        self.strength = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_strength), trainable=False,
            name="strength",
        )

    def call(self, inputs):
        # λ is read into a tensor here, outside the custom-gradient function: tf.custom_gradient
        # refuses functions that read variables they do not declare.
        strength = tf.cast(tf.convert_to_tensor(self.strength), inputs.dtype)

        @tf.custom_gradient
        def reverse(x):
            def gradient(upstream):
                return -strength * upstream

            return tf.identity(x), gradient

        return reverse(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "strength": self.initial_strength}


class GradientReversalSchedule(keras.callbacks.Callback):
    """Sets each reversal layer's λ to `reversal_strength(p)` before every training batch.

    p = optimizer steps taken / `total_steps`, so a resumed fit continues the schedule where it
    stopped. `fixed` (a float) holds λ constant instead, e.g. 0 for a source-only baseline.
    """

    def __init__(self, layers, total_steps, gamma=10.0, fixed=None):
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
        self.layers, self.total_steps, self.gamma, self.fixed = list(layers), total_steps, gamma, fixed
        self.history = []  # (step, λ) at the start of each epoch and at the end

    def strength_at(self, step):
        if self.fixed is not None:
            return float(self.fixed)
        return reversal_strength(min(step / self.total_steps, 1.0), self.gamma)

    def _set(self):
        step = int(self.model.optimizer.iterations.numpy())
        value = self.strength_at(step)
        for layer in self.layers:
            layer.strength.assign(value)
        return step, value

    def on_train_batch_begin(self, batch, logs=None):
        self._set()

    def on_epoch_begin(self, epoch, logs=None):
        self.history.append(self._set())

    def on_train_end(self, logs=None):
        self.history.append(self._set())


@keras.saving.register_keras_serializable(package="tfcourse")
class AnnealedLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """μ_p = μ0 / (1 + α p)^β with p = step / total_steps (the paper: α = 10, β = 0.75)."""

    def __init__(self, initial_learning_rate, total_steps, alpha=10.0, beta=0.75):
        self.initial_learning_rate, self.total_steps = float(initial_learning_rate), int(total_steps)
        self.alpha, self.beta = float(alpha), float(beta)

    def __call__(self, step):
        progress = tf.minimum(tf.cast(step, "float32") / self.total_steps, 1.0)
        return self.initial_learning_rate / (1.0 + self.alpha * progress) ** self.beta

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "total_steps": self.total_steps,
                "alpha": self.alpha, "beta": self.beta}
