import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics

# one image, two objects; detections: a hit, a miss, a hit, in descending score
TRUTHS = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]
DETECTIONS = [np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], float)]
SCORES = [np.array([0.9, 0.8, 0.7])]


def test_box_iou_hand_worked_in_both_formats():
    assert metrics.box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3]])[0, 0] == pytest.approx(1 / 7)
    assert metrics.box_iou([[0, 0, 2, 2]], [[1, 1, 2, 2]], box_format="xywh")[0, 0] == pytest.approx(1 / 7)
    np.testing.assert_array_equal(metrics.box_iou([[0, 0, 2, 2]], [[2, 0, 4, 2], [0, 0, 2, 2], [0, 0, 1, 1]]),
                                  [[0, 1, 0.25]])


def test_box_iou_of_zero_area_boxes_is_zero_and_empty_inputs_give_empty_matrices():
    assert metrics.box_iou([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0
    assert metrics.box_iou([], [[0, 0, 1, 1]]).shape == (0, 1)


def test_box_iou_is_symmetric_and_bounded():
    rng = np.random.default_rng(0)
    a, b = parity.random_boxes_xywh(rng, 20), parity.random_boxes_xywh(rng, 15)
    forward, backward = metrics.box_iou(a, b, "xywh"), metrics.box_iou(b, a, "xywh")
    np.testing.assert_allclose(forward, backward.T, rtol=0, atol=1e-15)
    assert forward.min() >= 0 and forward.max() <= 1 and forward.max() > 0
    np.testing.assert_allclose(np.diag(metrics.box_iou(a, a, "xywh")), 1)


def test_average_precision_hand_worked():
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> monotone 1, 2/3, 2/3: recalls 0..0.5 read 1, 0.51..1 read 2/3
    ap = metrics.average_precision(TRUTHS, DETECTIONS, SCORES)
    assert ap == pytest.approx((51 * 1 + 50 * 2 / 3) / 101, abs=1e-12)
    assert metrics.average_precision(TRUTHS, DETECTIONS, SCORES, max_detections=2) == pytest.approx(51 / 101)


def test_tied_scores_keep_their_input_order_as_in_coco():
    truths = [np.array([[0, 0, 10, 10]], float)]
    hit_first = [np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)]
    miss_first = [hit_first[0][::-1]]
    tied = [np.array([0.5, 0.5])]
    assert metrics.average_precision(truths, hit_first, tied) == 1.0
    assert metrics.average_precision(truths, miss_first, tied) == 0.5


def test_equal_ious_match_the_later_ground_truth_as_coco():
    truths = [np.array([[0, 0, 2, 4], [0, 0, 4, 2]], float)]
    detections = [np.array([[0, 0, 2, 2], [0, 0, 4, 2]], float)]  # the first has IoU 0.5 with both
    # the first detection takes the second truth, so the second detection (IoU 1/3 with the first truth) misses
    assert metrics.average_precision(truths, detections, [np.array([0.9, 0.8])]) == pytest.approx(51 / 101)


def test_no_ground_truth_is_nan_and_no_detections_is_zero():
    assert np.isnan(metrics.average_precision([[]], DETECTIONS, SCORES))
    assert metrics.average_precision(TRUTHS, [[]], [[]]) == 0.0
    assert np.isnan(metrics.mean_average_precision([[]], [[]], DETECTIONS, SCORES, [[0, 0, 0]]))


def test_mean_average_precision_perfect_and_ignores_classes_without_ground_truth():
    labels = [np.array([0, 1])]
    assert metrics.mean_average_precision(TRUTHS, labels, TRUTHS, [np.array([0.9, 0.8])], labels) == 1.0
    with_stray = metrics.mean_average_precision(TRUTHS, labels, DETECTIONS, SCORES, [np.array([0, 7, 1])])
    assert with_stray == 1.0  # the miss is class 7, which has no ground truth
    at_half = metrics.mean_average_precision(TRUTHS, labels, DETECTIONS, SCORES, [np.array([0, 1, 1])],
                                             iou_thresholds=[0.5])
    assert at_half == pytest.approx((1 + 0.5) / 2)  # class 1: a miss then a hit, precision 1/2 at every recall


def test_average_precision_does_not_depend_on_image_or_detection_order():
    rng = np.random.default_rng(3)
    truths = [parity.random_boxes_xywh(rng, 4) for _ in range(6)]
    detections = [np.vstack([t + rng.normal(0, 2, t.shape), parity.random_boxes_xywh(rng, 2)]) for t in truths]
    scores = [rng.random(len(d)) for d in detections]  # distinct scores
    ap = metrics.average_precision(truths, detections, scores, box_format="xywh")
    images = rng.permutation(6)
    shuffled = [rng.permutation(len(detections[i])) for i in images]
    again = metrics.average_precision([truths[i] for i in images], [detections[i][o] for i, o in zip(images, shuffled)],
                                      [scores[i][o] for i, o in zip(images, shuffled)], box_format="xywh")
    assert again == pytest.approx(ap, abs=1e-12) and 0 < ap < 1


def test_nms_hand_worked():
    boxes = [[0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 6, 6]]  # IoU of the first two is exactly 0.5
    np.testing.assert_array_equal(metrics.non_max_suppression(boxes, [0.9, 0.8, 0.7], iou_threshold=0.5), [0, 1, 2])
    np.testing.assert_array_equal(metrics.non_max_suppression(boxes, [0.9, 0.8, 0.7], iou_threshold=0.49), [0, 2])
    np.testing.assert_array_equal(metrics.non_max_suppression(boxes, [0.8, 0.8, 0.9], iou_threshold=0.4), [2, 0])
    np.testing.assert_array_equal(metrics.non_max_suppression(boxes, [0.9, 0.8, 0.7], score_threshold=0.75), [0, 1])
    np.testing.assert_array_equal(
        metrics.non_max_suppression([[0, 0, 2, 1], [0, 0, 1, 1]], [0.1, 0.9], 0.4, box_format="xywh"), [1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.box_iou([[2, 0, 1, 1]], [[0, 0, 1, 1]]), "boxes_a has boxes of negative width"),
        (lambda: metrics.box_iou([[0, 0, 1]], [[0, 0, 1, 1]]), "boxes_a must have 4 values"),
        (lambda: metrics.box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]], "cxcywh"), "box_format must be one of"),
        (lambda: metrics.average_precision(TRUTHS, DETECTIONS, [[0.9, 0.8]]), r"det_boxes\[0\] \(3\) and det_scores"),
        (lambda: metrics.average_precision(TRUTHS, DETECTIONS, SCORES, iou_threshold=1.5), "iou_threshold must be in"),
        (lambda: metrics.average_precision(TRUTHS, [], []), "gt_boxes .* det_boxes .* same length"),
        (lambda: metrics.mean_average_precision(TRUTHS, [[0]], DETECTIONS, SCORES, [[0, 0, 0]]), r"gt_labels\[0\]"),
        (lambda: metrics.mean_average_precision(TRUTHS, [[0, 1]], DETECTIONS, SCORES, [[0.5, 0, 0]]), "int class"),
        (lambda: metrics.non_max_suppression([[0, 0, 1, 1]], [np.inf]), "scores has NaN or infinite"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["detection"])
def test_agrees_with_pycocotools(name, seed):
    assert parity.run("detection", name, seed) <= parity.TOLERANCE
