"""Semantic segmentation metrics. Conventions:

- `y_true` and `y_pred` are label maps of the same shape (one [h, w] map, a batch [n, h, w], ...): int
  (or bool) class indices in [0, num_classes). Pixels whose `y_true` is `ignore_index` (e.g. 255, which
  must lie outside the classes) are left out of every metric.
- Every metric pools all pixels of the input (a batch counts as one big image) through one confusion matrix.
- IoU_c = TP / (TP + FP + FN) and Dice_c = 2 TP / (2 TP + FP + FN). A class absent from both y_true and
  y_pred has no IoU or Dice (NaN) and is left out of the means, as keras.metrics.MeanIoU does: two
  all-zero binary masks have background IoU 1, foreground NaN, and mIoU 1.
- With no pixels left to score, pixel accuracy and the means are NaN.
"""

import numpy as np

from tfcourse.metrics import _validate
from tfcourse.metrics.classification import confusion_matrix


# keras.metrics.MeanIoU returns float32; the same confusion matrix gives every metric here in float64.
def _confusion(y_true, y_pred, num_classes, ignore_index):
    num_classes = _validate.positive_int("num_classes", num_classes)
    if ignore_index is not None:
        an_int = isinstance(ignore_index, (int, np.integer)) and not isinstance(ignore_index, bool)
        if not an_int or 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index must be an int outside the classes [0, {num_classes}), got {ignore_index!r}.")
    y_true = _validate.labels("y_true", y_true, num_classes, ignore=ignore_index)
    y_pred = _validate.labels("y_pred", y_pred)
    _validate.same_shape("y_true", y_true, "y_pred", y_pred)
    scored = y_true != ignore_index if ignore_index is not None else np.ones(y_true.shape, bool)
    return confusion_matrix(y_true[scored], y_pred[scored], num_classes).astype(np.float64)


def _nan_divide(numerator, denominator):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _nan_mean(values):
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _per_class(matrix, true_positive_weight):
    """Per-class w TP / (w TP + FP + FN): IoU for w = 1, Dice for w = 2."""
    true_positives = np.diag(matrix)
    errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * true_positives
    scored = true_positive_weight * true_positives
    return _nan_divide(scored, scored + errors)


def pixel_accuracy(y_true, y_pred, num_classes, ignore_index=None):
    """Fraction of scored pixels labelled right."""
    matrix = _confusion(y_true, y_pred, num_classes, ignore_index)
    return float(_nan_divide(np.trace(matrix), matrix.sum()))


def per_class_iou(y_true, y_pred, num_classes, ignore_index=None):
    """[num_classes] IoU per class (NaN for a class in neither map)."""
    return _per_class(_confusion(y_true, y_pred, num_classes, ignore_index), 1)


def mean_iou(y_true, y_pred, num_classes, ignore_index=None):
    """mIoU: the mean IoU of the classes present in y_true or y_pred."""
    return _nan_mean(per_class_iou(y_true, y_pred, num_classes, ignore_index))


def per_class_dice(y_true, y_pred, num_classes, ignore_index=None):
    """[num_classes] Dice (F1) per class (NaN for a class in neither map)."""
    return _per_class(_confusion(y_true, y_pred, num_classes, ignore_index), 2)


def mean_dice(y_true, y_pred, num_classes, ignore_index=None):
    """The mean Dice of the classes present in y_true or y_pred."""
    return _nan_mean(per_class_dice(y_true, y_pred, num_classes, ignore_index))
