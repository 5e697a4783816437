"""Monocular depth metrics (Eigen et al. 2014). Conventions:

- `predicted` and `target` are depth maps of the same shape (one map or a batch); a pixel is scored
  where `valid` is True, by default where target > 0 (no ground truth, as in KITTI's sparse maps).
  Predicted and target depths must be > 0 on scored pixels (clip predictions to the dataset's range first).
- All scored pixels of the input are pooled (a batch counts as one image; to average per image,
  call once per image).
- RMSE, MAE, AbsRel = mean(|p - t| / t), SqRel = mean((p - t)^2 / t), and delta_k = the fraction
  with max(p / t, t / p) < 1.25^k for k = 1, 2, 3.
- With no scored pixel every metric is NaN.
"""

import numpy as np

from tfcourse.metrics import _validate

METRICS = ("rmse", "mae", "abs_rel", "sq_rel", "delta1", "delta2", "delta3")


def depth_metrics(predicted, target, valid=None):
    """{"rmse", "mae", "abs_rel", "sq_rel", "delta1", "delta2", "delta3"} over the scored pixels."""
    import keras

    predicted = _validate.numbers("predicted", predicted)
    target = _validate.numbers("target", target)
    _validate.same_shape("predicted", predicted, "target", target)
    if valid is None:
        valid = target > 0
    else:
        valid = _validate.binary("valid", valid)
        _validate.same_shape("valid", valid, "target", target)
    predicted, target = predicted[valid], target[valid]
    if not target.size:
        return dict.fromkeys(METRICS, float("nan"))
    for name, values in (("target", target), ("predicted", predicted)):
        if values.min() <= 0:
            raise ValueError(f"{name} must be > 0 on every scored pixel, got {values.min()}.")
    ratio = np.maximum(predicted / target, target / predicted)
    return {
        "rmse": _validate.keras_result(keras.metrics.RootMeanSquaredError(dtype="float64"), target, predicted),
        "mae": _validate.keras_result(keras.metrics.MeanAbsoluteError(dtype="float64"), target, predicted),
        "abs_rel": float(np.mean(np.abs(predicted - target) / target)),
        "sq_rel": float(np.mean((predicted - target) ** 2 / target)),
        **{f"delta{k}": float(np.mean(ratio < 1.25**k)) for k in (1, 2, 3)},
    }
