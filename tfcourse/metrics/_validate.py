"""Input checks shared by the metric modules (every failure is a ValueError naming the argument), and one helper."""

import numpy as np

BOX_FORMATS = ("xyxy", "xywh")


def _as_array(name, values):
    try:
        return np.asarray(values)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array: {error}") from None


def _check_shape(name, values, ndim, last_dim):
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and values.ndim not in allowed:
        wanted = " or ".join(f"{n}-D" for n in allowed)
        raise ValueError(f"{name} must be {wanted}, got shape {values.shape}.")
    if last_dim is not None and (values.ndim == 0 or values.shape[-1] != last_dim):
        raise ValueError(f"{name} must have {last_dim} values on its last axis, got shape {values.shape}.")


def numbers(name, values, ndim=None, last_dim=None):
    """`values` as a finite float64 array; rejects bool, complex, strings, NaN, inf and the wrong shape."""
    values = _as_array(name, values)
    if values.size == 0:
        values = values.astype(np.float64)
    real = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    if values.dtype == bool or not real:
        raise ValueError(f"{name} must hold real numbers (int or float), got dtype {values.dtype}.")
    _check_shape(name, values, ndim, last_dim)
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} has NaN or infinite values.")
    return values


def labels(name, values, num_classes=None, ndim=None, ignore=None):
    """`values` as an int64 array of class indices in [0, num_classes) (bool counts as 0/1) or `ignore`."""
    values = _as_array(name, values)
    if values.size == 0:
        values = values.astype(np.int64)
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        shape = "a 1-D array of " if ndim == 1 else "an array of "
        raise ValueError(f"{name} must be {shape}int class indices, got dtype {values.dtype} shape {values.shape}.")
    _check_shape(name, values, ndim, None)
    values = values.astype(np.int64)
    checked = values if ignore is None else values[values != ignore]
    if checked.size and checked.min() < 0:
        raise ValueError(f"{name} has class indices outside [0, {num_classes or 'num_classes'}): {checked.min()}.")
    if num_classes is not None and checked.size and checked.max() >= num_classes:
        raise ValueError(f"{name} has class indices outside [0, {num_classes}): {checked.max()}.")
    return values


def binary(name, values, ndim=None):
    """`values` as a bool array: bool, or ints that are all 0 or 1."""
    values = _as_array(name, values)
    if values.size == 0:
        values = values.astype(bool)
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise ValueError(f"{name} must be binary labels (bool, or ints 0 and 1), got dtype {values.dtype}.")
    others = np.setdiff1d(values, (0, 1))
    if others.size:
        raise ValueError(f"{name} must be binary labels (bool, or ints 0 and 1), got {others[:5].tolist()}.")
    _check_shape(name, values, ndim, None)
    return values.astype(bool)


def boxes(name, values, box_format):
    """[n, 4] boxes in `box_format` ("xyxy" or "xywh") as float64 xyxy; an empty list is taken as no boxes."""
    choice("box_format", box_format, BOX_FORMATS)
    boxes = numbers(name, values)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    numbers(name, boxes, ndim=2, last_dim=4)
    if box_format == "xywh":
        boxes = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if np.any(boxes[:, 2:] < boxes[:, :2]):
        raise ValueError(f"{name} has boxes of negative width or height (box_format={box_format!r}).")
    return boxes


def same_shape(name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {a.shape} and {name_b} {b.shape} must have the same shape.")


def length(name, values):
    """len(values), or a ValueError for what has no length (None, a number)."""
    try:
        return len(values)
    except TypeError:
        raise ValueError(f"{name} must be a list or an array, got {type(values).__name__}.") from None


def same_length(name_a, a, name_b, b):
    if length(name_a, a) != length(name_b, b):
        raise ValueError(f"{name_a} ({len(a)}) and {name_b} ({len(b)}) must have the same length.")


def non_empty(name, values):
    if length(name, values) == 0:
        raise ValueError(f"{name} is empty.")


def positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    return int(value)


def number_in(name, value, low, high, low_open=False, high_open=False):
    """A real scalar in [low, high] (open at the ends asked for)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if np.isnan(value) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}.")
    return value


def choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def keras_result(metric, *args):
    """The float result of a fresh Keras metric after one update."""
    metric.update_state(*args)
    return float(metric.result())
