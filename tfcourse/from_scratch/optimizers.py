"""SGD, momentum, RMSprop and Adam written from their update rules, as Keras optimizers.

Notation: w a weight, g its gradient, lr the learning rate, t the step (1, 2, ...).
Hyperparameters and epsilon placement are Keras's, so that each matches its Keras class step for
step (`keras.optimizers.SGD`, `SGD(momentum=...)`, `RMSprop`, `Adam`).
Because they subclass `keras.optimizers.Optimizer`, they work in `model.fit`.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcourse")
class SGD(keras.optimizers.Optimizer):
    """w <- w - lr * g"""

    def __init__(self, learning_rate=0.01, name="sgd_from_scratch", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        self.assign_sub(variable, learning_rate * gradient)


@keras.saving.register_keras_serializable(package="tfcourse")
class Momentum(keras.optimizers.Optimizer):
    """v <- mu * v - lr * g;  w <- w + v   (heavy-ball momentum, v starts at 0)"""

    def __init__(self, learning_rate=0.01, momentum=0.9, name="momentum_from_scratch", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = self.add_optimizer_variables(variables, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        v = self.velocities[self._get_variable_index(variable)]
        self.assign(v, self.momentum * v - learning_rate * gradient)
        self.assign_add(variable, v)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="tfcourse")
class RMSprop(keras.optimizers.Optimizer):
    """s <- rho * s + (1 - rho) * g^2;  w <- w - lr * g / sqrt(s + eps)   (eps inside the root)"""

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, name="rmsprop_from_scratch", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho = rho
        self.epsilon = epsilon

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.mean_squares = self.add_optimizer_variables(variables, "mean_square")

    def update_step(self, gradient, variable, learning_rate):
        s = self.mean_squares[self._get_variable_index(variable)]
        self.assign(s, self.rho * s + (1 - self.rho) * ops.square(gradient))
        self.assign_sub(variable, learning_rate * gradient / ops.sqrt(s + self.epsilon))

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="tfcourse")
class Adam(keras.optimizers.Optimizer):
    """m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    w <- w - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

    The bias corrections are folded into the step size and eps is added to sqrt(v) uncorrected:
    the "epsilon hat" form of Kingma & Ba (2015), section 2, which Keras and TF use.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="adam_from_scratch", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.first_moments, self.second_moments = self.add_optimizer_variables(variables, ["m", "v"])

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        m, v = self.first_moments[index], self.second_moments[index]
        t = ops.cast(self.iterations + 1, variable.dtype)
        self.assign(m, self.beta_1 * m + (1 - self.beta_1) * gradient)
        self.assign(v, self.beta_2 * v + (1 - self.beta_2) * ops.square(gradient))
        step_size = learning_rate * ops.sqrt(1 - ops.power(self.beta_2, t)) / (1 - ops.power(self.beta_1, t))
        self.assign_sub(variable, step_size * m / (ops.sqrt(v) + self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


def keras_twin(optimizer):
    """The Keras optimizer with the same update rule and hyperparameters."""
    lr = float(optimizer.learning_rate)
    if isinstance(optimizer, Momentum):
        return keras.optimizers.SGD(lr, momentum=optimizer.momentum)
    if isinstance(optimizer, SGD):
        return keras.optimizers.SGD(lr)
    if isinstance(optimizer, RMSprop):
        return keras.optimizers.RMSprop(lr, rho=optimizer.rho, epsilon=optimizer.epsilon)
    if isinstance(optimizer, Adam):
        return keras.optimizers.Adam(lr, optimizer.beta_1, optimizer.beta_2, optimizer.epsilon)
    raise ValueError(f"No Keras twin for {type(optimizer).__name__}.")
