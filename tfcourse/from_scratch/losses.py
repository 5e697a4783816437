"""Losses written from their definitions; each returns one value per example, like Keras's functions.

`y` are targets, `s` raw scores (logits), `p` probabilities; the class axis is the last.
"""

from keras import ops

PROBABILITY_EPSILON = 1e-7  # Keras clips probabilities to [eps, 1 - eps] before the log


def mean_squared_error(y, prediction):
    """mean_j (y_j - prediction_j)^2"""
    return ops.mean(ops.square(y - prediction), axis=-1)


def categorical_crossentropy_from_logits(y, s):
    """-sum_j y_j log softmax(s)_j, with log softmax(s)_j = s_j - logsumexp(s) (stable for large s)."""
    return -ops.sum(y * (s - ops.logsumexp(s, axis=-1, keepdims=True)), axis=-1)


def categorical_crossentropy_from_probabilities(y, p):
    """-sum_j y_j log p_j, after renormalising p to sum to 1 and clipping it away from 0 and 1 (as Keras)."""
    p = p / ops.sum(p, axis=-1, keepdims=True)
    p = ops.clip(p, PROBABILITY_EPSILON, 1 - PROBABILITY_EPSILON)
    return -ops.sum(y * ops.log(p), axis=-1)


def binary_hinge(y, s):
    """mean_j max(0, 1 - y_j s_j), with labels y in {-1, 1} (labels in {0, 1} are mapped to them)."""
    y = ops.where(ops.equal(y, 0), -1.0, y)
    return ops.mean(ops.maximum(1 - y * s, 0.0), axis=-1)


def multiclass_hinge(y, s):
    """Crammer-Singer: max(0, 1 + max_{j != true} s_j - s_true), y one-hot.

    As in Keras's `categorical_hinge`, the largest wrong-class score is floored at 0 (Keras takes
    the max over (1 - y) * s, where the true class contributes a 0).
    """
    true_score = ops.sum(y * s, axis=-1)
    largest_wrong = ops.max((1 - y) * s, axis=-1)
    return ops.maximum(1 + largest_wrong - true_score, 0.0)
