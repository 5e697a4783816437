"""What the lessons measure. Conventions:

- `y_true` and `y_pred` are int class indices in [0, num_classes); probabilities are
  [n, num_classes] rows.
- The confusion matrix is `tf.math.confusion_matrix`'s: rows are true classes, columns predicted.
- Precision, recall and F1 of a class with no predicted (or no true) examples are 0, as in
  scikit-learn's default `zero_division` warning case; macro averages are unweighted means over
  all classes.
"""

import numpy as np
import tensorflow as tf


def _check_labels(name, values, num_classes):
    values = np.asarray(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D array of int class indices, got dtype {values.dtype} shape {values.shape}.")
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} has class indices outside [0, {num_classes}).")
    return values


def confusion_matrix(y_true, y_pred, num_classes):
    y_true = _check_labels("y_true", y_true, num_classes)
    y_pred = _check_labels("y_pred", y_pred, num_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same shape.")
    return tf.math.confusion_matrix(y_true, y_pred, num_classes=num_classes).numpy().astype(np.int64)


def classification_report(y_true, y_pred, class_names):
    """accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix."""
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    true_positives = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    total = matrix.sum()
    return {
        "accuracy": float(true_positives.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": matrix.tolist(),
        "num_examples": int(total),
    }
