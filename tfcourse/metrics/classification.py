"""Classification metrics. Conventions:

- `y_true` and `y_pred` are 1-D int class indices in [0, num_classes); `scores` are [n, num_classes]
  rows (probabilities or logits: only their order matters), or [n] for the binary ROC.
- The confusion matrix is `tf.math.confusion_matrix`'s: rows are true classes, columns predicted.
- Precision, recall and F1 of a class with no predicted (or no true) examples are 0, as in
  scikit-learn's `zero_division=0`. Macro averages are unweighted means over all classes, weighted
  averages weight classes by support, micro averages pool all examples (for single-label data all
  three micro scores equal accuracy). Empty inputs score 0.
- Top-k accuracy counts a sample as correct when fewer than k classes score strictly higher than its
  true class, so a tie at the k-th place counts as in (`tf.math.in_top_k`'s rule); scikit-learn's
  `top_k_accuracy_score` breaks ties toward the higher class index instead, so the two agree
  whenever scores have no ties.
- The ROC curve is exact: one point per distinct score, tied scores moving together (scikit-learn's
  `roc_curve(drop_intermediate=False)`), starting at (0, 0) with threshold +inf. ROC AUC is the
  trapezoid area under it, so a positive and a negative with equal scores count one half. With no
  positives (or no negatives) the true (false) positive rate is NaN and so is the AUC, as in
  scikit-learn; the one-vs-rest macro AUC averages the classes where it is defined (NaN if none).
"""

import numpy as np
import tensorflow as tf

from tfcourse.metrics import _validate

AVERAGES = (None, "macro", "micro", "weighted")


def _label_pair(y_true, y_pred, num_classes=None):
    y_true = _validate.labels("y_true", y_true, num_classes, ndim=1)
    y_pred = _validate.labels("y_pred", y_pred, num_classes, ndim=1)
    _validate.same_shape("y_true", y_true, "y_pred", y_pred)
    return y_true, y_pred


def _safe_divide(numerator, denominator):
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def accuracy(y_true, y_pred):
    """Fraction of predictions equal to the true class (keras.metrics.Accuracy, in float64)."""
    import keras

    y_true, y_pred = _label_pair(y_true, y_pred)
    return _validate.keras_result(keras.metrics.Accuracy(dtype="float64"), y_true, y_pred)


# keras.metrics.SparseTopKCategoricalAccuracy runs tf.math.in_top_k in float32, which can tie scores that differ
# in float64; this is the same rule (ties count as in) on the scores as given.
def top_k_accuracy(y_true, scores, k=5):
    """Fraction of samples whose true class is among the k highest scores (ties count as in; see module doc)."""
    scores = _validate.numbers("scores", scores, ndim=2)
    y_true = _validate.labels("y_true", y_true, scores.shape[1], ndim=1)
    _validate.same_length("y_true", y_true, "scores", scores)
    k = _validate.positive_int("k", k)
    true_scores = np.take_along_axis(scores, y_true[:, None], axis=1)
    higher = np.sum(scores > true_scores, axis=1)
    return float(np.mean(higher < k)) if len(y_true) else 0.0


def confusion_matrix(y_true, y_pred, num_classes):
    """[num_classes, num_classes] int64 counts: rows true class, columns predicted class."""
    num_classes = _validate.positive_int("num_classes", num_classes)
    y_true, y_pred = _label_pair(y_true, y_pred, num_classes)
    return tf.math.confusion_matrix(y_true, y_pred, num_classes=num_classes, dtype=tf.int64).numpy()


# keras.metrics.F1Score adds an epsilon to every denominator, so these are computed exactly from the confusion matrix.
def _per_class_scores(matrix):
    true_positives = np.diag(matrix)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = _safe_divide(true_positives, predicted)
    recall = _safe_divide(true_positives, support)
    f1 = _safe_divide(2 * true_positives, predicted + support)
    return precision, recall, f1


def precision_recall_f1(y_true, y_pred, num_classes, average=None):
    """(precision, recall, F1): per-class arrays when `average` is None, else floats averaged as asked."""
    _validate.choice("average", average, AVERAGES)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    if average == "micro":
        pooled = float(_safe_divide(np.trace(matrix), matrix.sum()))
        return pooled, pooled, pooled
    scores = _per_class_scores(matrix)
    if average is None:
        return scores
    support = matrix.sum(axis=1)
    weights = np.full(num_classes, 1 / num_classes) if average == "macro" else _safe_divide(support, support.sum())
    return tuple(float(np.dot(score, weights)) for score in scores)


def classification_report(y_true, y_pred, class_names):
    """accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix."""
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    precision, recall, f1 = _per_class_scores(matrix)
    support = matrix.sum(axis=1)
    total = int(matrix.sum())
    return {
        "accuracy": float(_safe_divide(np.trace(matrix), total)),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float(_safe_divide(np.dot(f1, support), total)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": matrix.tolist(),
        "num_examples": total,
    }


def roc_curve(y_true, scores):
    """(false positive rate, true positive rate, thresholds) at every distinct score, highest first.

    `y_true` is binary (bool or 0/1), `scores` higher for the positive class; a sample is predicted
    positive when its score >= the threshold. See module doc for ties and missing classes.
    """
    y_true = _validate.binary("y_true", y_true, ndim=1)
    scores = _validate.numbers("scores", scores, ndim=1)
    _validate.same_shape("y_true", y_true, "scores", scores)
    _validate.non_empty("y_true", y_true)
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores = scores[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(sorted_scores)), scores.size - 1]
    true_positives = np.r_[0, np.cumsum(y_true[order])[last_of_each_score]]
    false_positives = np.r_[0, last_of_each_score + 1] - true_positives
    thresholds = np.r_[np.inf, sorted_scores[last_of_each_score]]
    with np.errstate(invalid="ignore"):  # 0 / 0 -> NaN when a class is missing
        return false_positives / false_positives[-1], true_positives / true_positives[-1], thresholds


def roc_auc(y_true, scores):
    """Exact area under the binary ROC curve; NaN with no positives or no negatives."""
    # keras.metrics.AUC interpolates over a fixed grid of thresholds; this is the exact area.
    false_positive_rate, true_positive_rate, _ = roc_curve(y_true, scores)
    return float(np.trapezoid(true_positive_rate, false_positive_rate))


def roc_auc_ovr(y_true, scores):
    """One-vs-rest macro ROC AUC of [n, num_classes] scores: the mean of each class's AUC where defined."""
    scores = _validate.numbers("scores", scores, ndim=2)
    y_true = _validate.labels("y_true", y_true, scores.shape[1], ndim=1)
    _validate.same_length("y_true", y_true, "scores", scores)
    per_class = np.array([roc_auc(y_true == c, scores[:, c]) for c in range(scores.shape[1])])
    defined = per_class[~np.isnan(per_class)]
    return float(defined.mean()) if defined.size else float("nan")
