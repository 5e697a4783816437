"""Human pose metrics. Conventions:

- Keypoints are [n, k, 2] (x, y) arrays in pixels. `visible` [n, k] marks the labelled ground-truth
  keypoints (bool, or COCO's v: 0 unlabelled, 1 occluded, 2 visible; v > 0 counts); only those are scored.
- PCK@alpha (as mmpose's keypoint_pck_accuracy): a scored keypoint is correct when its distance to
  the ground truth is < alpha * size (strictly), size per instance being "bbox": max(width, height) of
  its ground-truth box, or "torso": the distance between two of its ground-truth keypoints
  (`torso_pair`, e.g. left shoulder and right hip). Instances whose size is 0, or one of whose torso
  keypoints is not labelled, are left out. PCK is computed per keypoint type (NaN for a type never
  scored) and averaged over the types that were scored (NaN when none was).
- OKS is pycocotools COCOeval.computeOks, for every detection against every ground truth: the mean,
  over the ground truth's labelled keypoints, of exp(-d^2 / (2 area kappa^2)) with kappa = 2 sigma and
  COCO's 17 per-keypoint sigmas by default (area gets COCO's + np.spacing(1)). A ground truth with no
  labelled keypoint is scored COCO's way on all keypoints, d being the distance outside its box grown by
  its own width and height on every side; that needs `target_boxes`, without which its OKS is NaN.
"""

import numpy as np

from tfcourse.metrics import _validate

# COCO's person keypoint sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_KEYPOINT_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10
NORMALIZATIONS = ("bbox", "torso")


def _keypoints(name, values, num_keypoints=None):
    values = _validate.numbers(name, values, ndim=3, last_dim=2)
    if num_keypoints is not None and values.shape[1] != num_keypoints:
        raise ValueError(f"{name} must have {num_keypoints} keypoints per instance, got shape {values.shape}.")
    return values


def _visible(visible, target):
    visible = np.asarray(visible)
    visible = _validate.numbers("visible", visible.astype(np.int64) if visible.dtype == bool else visible, ndim=2)
    if visible.shape != target.shape[:2]:
        raise ValueError(f"visible must be [instances, keypoints] = {target.shape[:2]}, got shape {visible.shape}.")
    if visible.min(initial=0) < 0:
        raise ValueError("visible must be bool or COCO visibility flags >= 0.")
    return visible > 0


def _boxes(name, boxes, count, box_format):
    boxes = _validate.boxes(name, boxes, box_format)
    if len(boxes) != count:
        raise ValueError(f"{name} must have one box per ground-truth instance ({count}), got {len(boxes)}.")
    return boxes


def _instance_sizes(target, scored, normalize, boxes, torso_pair, box_format):
    """Each instance's PCK size: its box's longer side or its torso length; 0 where undefined."""
    _validate.choice("normalize", normalize, NORMALIZATIONS)
    if normalize == "bbox":
        if boxes is None:
            raise ValueError('boxes is required with normalize="bbox".')
        boxes = _boxes("boxes", boxes, len(target), box_format)
        return np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
    num_keypoints = target.shape[1]
    if torso_pair is None or len(torso_pair) != 2 or not all(
            isinstance(i, (int, np.integer)) and 0 <= i < num_keypoints for i in torso_pair):
        raise ValueError(f'torso_pair must be two keypoint indices in [0, {num_keypoints}) with normalize="torso", '
                         f"got {torso_pair!r}.")
    first, second = torso_pair
    size = np.linalg.norm(target[:, first] - target[:, second], axis=1)
    return np.where(scored[:, first] & scored[:, second], size, 0.0)


def pck(predicted, target, visible, alpha=0.2, normalize="bbox", boxes=None, torso_pair=None, box_format="xyxy",
        average=True):
    """Fraction of keypoints within alpha * size: the mean over keypoint types, or per type ([k]) when
    `average` is False; see module doc."""
    target = _keypoints("target", target)
    predicted = _keypoints("predicted", predicted, target.shape[1])
    _validate.same_shape("predicted", predicted, "target", target)
    scored = _visible(visible, target)
    alpha = _validate.number_in("alpha", alpha, 0, np.inf, low_open=True)
    size = _instance_sizes(target, scored, normalize, boxes, torso_pair, box_format)
    scored &= (size > 0)[:, None]
    correct = np.linalg.norm(predicted - target, axis=-1) < alpha * size[:, None]
    counts = scored.sum(axis=0)
    with np.errstate(invalid="ignore"):  # NaN for keypoint types never scored
        per_keypoint = (correct & scored).sum(axis=0) / counts
    if not average:
        return per_keypoint
    return float(per_keypoint[counts > 0].mean()) if counts.any() else float("nan")


def object_keypoint_similarity(predicted, target, visible, areas, sigmas=COCO_KEYPOINT_SIGMAS, target_boxes=None,
                               box_format="xyxy"):
    """[detections, ground truths] OKS of every predicted pose with every ground-truth pose (COCOeval's)."""
    target = _keypoints("target", target)
    predicted = _keypoints("predicted", predicted, target.shape[1])
    scored = _visible(visible, target)
    areas = _validate.numbers("areas", areas, ndim=1)
    if len(areas) != len(target) or areas.min(initial=0) < 0:
        raise ValueError(f"areas must be {len(target)} values >= 0, one per ground truth, got {areas.tolist()}.")
    sigmas = _validate.numbers("sigmas", sigmas, ndim=1)
    if len(sigmas) != target.shape[1] or sigmas.min() <= 0:
        raise ValueError(f"sigmas must be {target.shape[1]} values > 0, one per keypoint, got {len(sigmas)}.")
    offsets = predicted[:, None] - target[None]  # [d, g, k, 2]
    unlabelled = ~scored.any(axis=1)
    if unlabelled.any():
        if target_boxes is None:
            offsets[:, unlabelled] = np.nan
        else:
            boxes = _boxes("target_boxes", target_boxes, len(target), box_format)
            size = boxes[:, 2:] - boxes[:, :2]
            low, high = boxes[:, None, :2] - size[:, None], boxes[:, None, 2:] + size[:, None]  # [g, 1, 2]
            outside = np.maximum(low - predicted[:, None], 0) + np.maximum(predicted[:, None] - high, 0)
            offsets[:, unlabelled] = outside[:, unlabelled]
            scored = scored | unlabelled[:, None]  # COCO then scores every keypoint
    error = np.sum(offsets**2, axis=-1) / (2 * sigmas) ** 2 / (areas[:, None] + np.spacing(1)) / 2
    with np.errstate(invalid="ignore"):  # NaN for the unlabelled ground truths left unscored
        return np.sum(np.exp(-error) * scored, axis=-1) / scored.sum(axis=-1)
