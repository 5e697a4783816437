import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics

TARGET = np.array([[[10.0, 10.0], [20.0, 10.0], [30.0, 10.0]]])
PREDICTED = TARGET + [[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]]  # distances 1, 2, 3
BOX = [[0, 0, 10, 20]]  # size max(10, 20) = 20; alpha 0.1 -> threshold 2


def test_pck_hand_worked_by_box():
    visible = [[True, True, True]]
    np.testing.assert_array_equal(metrics.pck(PREDICTED, TARGET, visible, 0.1, boxes=BOX, average=False), [1, 0, 0])
    assert metrics.pck(PREDICTED, TARGET, visible, 0.1, boxes=BOX) == pytest.approx(1 / 3)  # 2 is not < 2
    assert metrics.pck(PREDICTED, TARGET, visible, 0.125, boxes=BOX) == pytest.approx(2 / 3)
    per_type = metrics.pck(PREDICTED, TARGET, [[1, 0, 2]], 0.1, boxes=BOX, average=False)
    np.testing.assert_array_equal(per_type, [1, np.nan, 0])


def test_pck_by_torso_and_undefined_sizes():
    # torso = keypoints 0 and 2, 20 apart: alpha 0.1 -> threshold 2
    assert metrics.pck(PREDICTED, TARGET, [[1, 1, 1]], 0.1, "torso", torso_pair=(0, 2)) == pytest.approx(1 / 3)
    assert np.isnan(metrics.pck(PREDICTED, TARGET, [[1, 1, 0]], 0.1, "torso", torso_pair=(0, 2)))
    assert np.isnan(metrics.pck(PREDICTED, TARGET, [[1, 1, 1]], 0.1, boxes=[[5, 5, 5, 5]]))


def test_pck_per_keypoint_type_mean_and_instance_order():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 100, (20, 5, 2))
    predicted = target + rng.normal(0, 5, target.shape)
    visible = rng.random((20, 5)) < 0.7
    boxes = np.hstack([target.min(axis=1), target.max(axis=1)])
    per_type = metrics.pck(predicted, target, visible, 0.1, boxes=boxes, average=False)
    assert metrics.pck(predicted, target, visible, 0.1, boxes=boxes) == pytest.approx(per_type.mean())
    order = rng.permutation(20)
    again = metrics.pck(predicted[order], target[order], visible[order], 0.1, boxes=boxes[order], average=False)
    np.testing.assert_array_equal(again, per_type)
    assert np.all((per_type > 0) & (per_type < 1))


def test_oks_hand_worked():
    sigmas = [0.1, 0.1, 0.1]
    oks = metrics.object_keypoint_similarity(PREDICTED, TARGET, [[2, 2, 0]], [100.0], sigmas=sigmas)
    kappa2 = (2 * 0.1) ** 2
    expected = (np.exp(-1 / (2 * 100 * kappa2)) + np.exp(-4 / (2 * 100 * kappa2))) / 2
    assert oks.shape == (1, 1) and oks[0, 0] == pytest.approx(expected, rel=1e-12)
    assert metrics.object_keypoint_similarity(TARGET, TARGET, [[1, 1, 1]], [100.0], sigmas=sigmas)[0, 0] == 1.0


def test_oks_ground_truth_without_labelled_keypoints():
    sigmas = [0.1, 0.1, 0.1]
    assert np.isnan(metrics.object_keypoint_similarity(PREDICTED, TARGET, [[0, 0, 0]], [100.0], sigmas=sigmas)[0, 0])
    # COCO's way: every predicted keypoint inside the box grown by its size on each side scores 1
    inside = metrics.object_keypoint_similarity(PREDICTED, TARGET, [[0, 0, 0]], [100.0], sigmas=sigmas,
                                                target_boxes=[[10, 10, 30, 12]])
    assert inside[0, 0] == 1.0


def test_oks_uses_coco_sigmas_and_rows_follow_detections():
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 100, (3, 17, 2))
    predicted = target[[2, 0]] + rng.normal(0, 3, (2, 17, 2))
    oks = metrics.object_keypoint_similarity(predicted, target, np.ones((3, 17)), [900.0, 900.0, 900.0])
    assert np.all((oks > 0) & (oks <= 1)) and oks[0].argmax() == 2 and oks[1].argmax() == 0
    np.testing.assert_array_equal(
        metrics.object_keypoint_similarity(predicted[::-1], target, np.ones((3, 17)), [900.0] * 3), oks[::-1])
    assert len(metrics.COCO_KEYPOINT_SIGMAS) == 17 and metrics.COCO_KEYPOINT_SIGMAS[0] == pytest.approx(0.026)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.pck(PREDICTED, TARGET, [[1, 1]], boxes=BOX), r"visible must be \[instances, keypoints\]"),
        (lambda: metrics.pck(PREDICTED, TARGET, [[1, 1, 1]]), "boxes is required"),
        (lambda: metrics.pck(PREDICTED, TARGET, [[1, 1, 1]], normalize="torso"), "torso_pair must be two"),
        (lambda: metrics.pck(PREDICTED, TARGET, [[1, 1, 1]], alpha=0, boxes=BOX), "alpha must be in"),
        (lambda: metrics.pck(PREDICTED[:, :2], TARGET, [[1, 1, 1]], boxes=BOX), "predicted must have 3 keypoints"),
        (lambda: metrics.pck(PREDICTED, TARGET, [[1, 1, 1]], boxes=BOX * 2), "one box per ground-truth"),
        (lambda: metrics.object_keypoint_similarity(PREDICTED, TARGET, [[1, 1, 1]], [1.0]), "sigmas must be 3"),
        (lambda: metrics.object_keypoint_similarity(PREDICTED, TARGET, [[1, 1, 1]], [-1.0], [1, 1, 1]), "areas"),
        (lambda: metrics.object_keypoint_similarity(PREDICTED[0], TARGET, [[1, 1, 1]], [1.0]), "must be 3-D"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["pose"])
def test_agrees_with_reference(name, seed):
    assert parity.run("pose", name, seed) <= parity.TOLERANCE
