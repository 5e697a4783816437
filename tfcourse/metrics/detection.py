"""Object detection metrics. Conventions:

- Boxes are [n, 4] float arrays in `box_format` "xyxy" (x_min, y_min, x_max, y_max) or "xywh"
  (x_min, y_min, width, height: COCO's); widths and heights must be >= 0. An image with no boxes
  may be given as an empty list.
- IoU is intersection over union; boxes with no area in common, or both of zero area, have IoU 0 (as COCO).
- AP follows pycocotools' COCOeval for bboxes (area range "all", no crowd regions), for one class:
  in each image the `max_detections` highest-scoring detections (stable sort: tied scores keep their
  input order) are matched greedily in score order, each to the still unmatched ground truth of
  highest IoU >= the threshold (the later one among equal IoUs, as COCOeval). All images' detections
  are then ranked by score (stable again, images in input order), precision is made monotone
  (each point takes the best precision at any higher recall) and read at the 101 recalls 0, 0.01,
  ..., 1 (0 past the highest recall reached); AP is their mean.
- A class with ground truth but no detections has AP 0. A class without ground truth has no AP
  (NaN) and is left out of the mean, as COCO's -1; its detections count for nothing. mAP averages
  AP over classes with ground truth and IoU thresholds (COCO: 0.50, 0.55, ..., 0.95); NaN when no
  class has ground truth.
- NMS is `tf.image.non_max_suppression`: greedy in descending score (ties in index order); a box is
  dropped when its IoU with a kept box is > iou_threshold. IoU is computed in float32 there.
"""

import numpy as np
import tensorflow as tf

from tfcourse.metrics import _validate

# The same float values as COCOeval's Params, so that ties with these thresholds break as there.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def _pairwise_iou(boxes_a, boxes_b):
    """[n, m] IoU of xyxy boxes."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(boxes_a[:, 2:] - boxes_a[:, :2], axis=-1)
    area_b = np.prod(boxes_b[:, 2:] - boxes_b[:, :2], axis=-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def box_iou(boxes_a, boxes_b, box_format="xyxy"):
    """[n, m] IoU of every box in `boxes_a` with every box in `boxes_b`."""
    return _pairwise_iou(_validate.boxes("boxes_a", boxes_a, box_format),
                         _validate.boxes("boxes_b", boxes_b, box_format))


def _greedy_match(ious, thresholds):
    """COCOeval's matching of score-sorted detections: [d, g] IoU -> [t, d] True where matched."""
    num_thresholds, (num_detections, num_truths) = len(thresholds), ious.shape
    matched = np.zeros((num_thresholds, num_detections), bool)
    if num_truths == 0:
        return matched
    taken = np.zeros((num_thresholds, num_truths), bool)
    limits = np.minimum(thresholds, 1 - 1e-10)  # COCOeval caps the threshold below 1
    rows = np.arange(num_thresholds)
    for d in range(num_detections):  # sequential by nature: each match takes a ground truth from the next ones
        candidates = np.where(taken, -1.0, ious[d])
        best = num_truths - 1 - np.argmax(candidates[:, ::-1], axis=1)  # the last of equal IoUs
        hit = candidates[rows, best] >= limits
        matched[hit, d] = True
        taken[rows[hit], best[hit]] = True
    return matched


def _check_images(gt_boxes, det_boxes, det_scores, box_format):
    """Per-image validated (xyxy ground truth, xyxy detections, detection scores)."""
    _validate.same_length("gt_boxes", gt_boxes, "det_boxes", det_boxes)
    _validate.same_length("det_boxes", det_boxes, "det_scores", det_scores)
    images = []
    for i in range(len(gt_boxes)):
        detections = _validate.boxes(f"det_boxes[{i}]", det_boxes[i], box_format)
        scores = _validate.numbers(f"det_scores[{i}]", det_scores[i], ndim=1)
        _validate.same_length(f"det_boxes[{i}]", detections, f"det_scores[{i}]", scores)
        images.append((_validate.boxes(f"gt_boxes[{i}]", gt_boxes[i], box_format), detections, scores))
    return images


def _check_labels(name, labels, boxes_name, boxes):
    """Per-image validated int labels, one per box."""
    _validate.same_length(name, labels, boxes_name, boxes)
    checked = [_validate.labels(f"{name}[{i}]", image_labels, ndim=1) for i, image_labels in enumerate(labels)]
    for i, (image_labels, image_boxes) in enumerate(zip(checked, boxes)):
        _validate.same_length(f"{name}[{i}]", image_labels, f"{boxes_name}[{i}]", image_boxes)
    return checked


def _average_precisions(images, thresholds, max_detections):
    """[t] COCO AP of one class over images of (gt boxes, detection boxes, scores); NaN without ground truth."""
    num_truths = sum(len(truths) for truths, _, _ in images)
    if num_truths == 0:
        return np.full(len(thresholds), np.nan)
    all_scores, all_matched = [], []
    for truths, detections, scores in images:
        order = np.argsort(-scores, kind="mergesort")[:max_detections]
        all_scores.append(scores[order])
        all_matched.append(_greedy_match(_pairwise_iou(detections[order], truths), thresholds))
    order = np.argsort(-np.concatenate(all_scores), kind="mergesort")
    matched = np.concatenate(all_matched, axis=1)[:, order]
    true_positives = np.cumsum(matched, axis=1)
    false_positives = np.cumsum(~matched, axis=1)
    recall = true_positives / num_truths
    precision = true_positives / (true_positives + false_positives)
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    padded = np.concatenate([precision, np.zeros((len(thresholds), 1))], axis=1)  # 0 past the highest recall
    at = np.stack([np.searchsorted(row, RECALL_POINTS, side="left") for row in recall])
    return np.take_along_axis(padded, at, axis=1).mean(axis=1)


def average_precision(gt_boxes, det_boxes, det_scores, iou_threshold=0.5, box_format="xyxy", max_detections=100):
    """COCO-style AP of one class at one IoU threshold; arguments are per-image lists (see module doc)."""
    iou_threshold = _validate.number_in("iou_threshold", iou_threshold, 0, 1)
    max_detections = _validate.positive_int("max_detections", max_detections)
    images = _check_images(gt_boxes, det_boxes, det_scores, box_format)
    return float(_average_precisions(images, np.array([iou_threshold]), max_detections)[0])


def mean_average_precision(gt_boxes, gt_labels, det_boxes, det_scores, det_labels,
                           iou_thresholds=COCO_IOU_THRESHOLDS, box_format="xyxy", max_detections=100):
    """COCO mAP@[.5:.95] (or over the `iou_thresholds` given): AP averaged over classes and thresholds."""
    thresholds = _validate.numbers("iou_thresholds", iou_thresholds, ndim=1)
    _validate.non_empty("iou_thresholds", thresholds)
    if thresholds.min() < 0 or thresholds.max() > 1:
        raise ValueError(f"iou_thresholds must be in [0, 1], got {thresholds.tolist()}.")
    max_detections = _validate.positive_int("max_detections", max_detections)
    images = _check_images(gt_boxes, det_boxes, det_scores, box_format)
    gt_labels = _check_labels("gt_labels", gt_labels, "gt_boxes", [truths for truths, _, _ in images])
    det_labels = _check_labels("det_labels", det_labels, "det_boxes", [detections for _, detections, _ in images])
    per_class = [
        _average_precisions(
            [(truths[truth_class == c], dets[det_class == c], scores[det_class == c])
             for (truths, dets, scores), truth_class, det_class in zip(images, gt_labels, det_labels)],
            thresholds, max_detections)
        for c in np.unique(np.concatenate([np.zeros(0, np.int64), *gt_labels]))  # the classes with ground truth
    ]
    return float(np.mean(per_class)) if per_class else float("nan")


def non_max_suppression(boxes, scores, iou_threshold=0.5, max_output_size=None, score_threshold=-np.inf,
                        box_format="xyxy"):
    """Indices of the boxes kept by greedy NMS, highest score first (see module doc)."""
    boxes = _validate.boxes("boxes", boxes, box_format)
    scores = _validate.numbers("scores", scores, ndim=1)
    _validate.same_length("boxes", boxes, "scores", scores)
    iou_threshold = _validate.number_in("iou_threshold", iou_threshold, 0, 1)
    if max_output_size is None:
        max_output_size = max(len(boxes), 1)
    max_output_size = _validate.positive_int("max_output_size", max_output_size)
    score_threshold = _validate.number_in("score_threshold", score_threshold, -np.inf, np.inf)
    # TF expects (y_min, x_min, y_max, x_max); IoU is the same with x and y swapped, so xyxy goes in as is.
    kept = tf.image.non_max_suppression(boxes.astype(np.float32), scores.astype(np.float32), max_output_size,
                                        iou_threshold=iou_threshold, score_threshold=score_threshold)
    return kept.numpy().astype(np.int64)
