"""Batch normalization written from its equations (Ioffe & Szegedy, 2015), as a Keras layer.

Over the batch (all axes but the last, the features):
    mu = mean(x),  var = mean((x - mu)^2)            (biased variance)
    y = gamma * (x - mu) / sqrt(var + eps) + beta
and the running statistics used at inference:
    moving_mean <- momentum * moving_mean + (1 - momentum) * mu     (the same for the variance)
Defaults are Keras's (momentum 0.99, eps 1e-3); Keras also keeps the biased variance.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcourse")
class BatchNorm(keras.layers.Layer):
    def __init__(self, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        features = (input_shape[-1],)
        self.gamma = self.add_weight(shape=features, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=features, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=features, initializer="zeros", trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=features, initializer="ones", trainable=False, name="moving_variance")

    def call(self, x, training=False):
        if training:
            batch_axes = tuple(range(len(x.shape) - 1))
            mean = ops.mean(x, axis=batch_axes)
            variance = ops.mean(ops.square(x - mean), axis=batch_axes)
            self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
            self.moving_variance.assign(self.momentum * self.moving_variance + (1 - self.momentum) * variance)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        return self.gamma * (x - mean) / ops.sqrt(variance + self.epsilon) + self.beta

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}
