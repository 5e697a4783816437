import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics

Y_TRUE = np.array([[0, 0], [1, 1]])
Y_PRED = np.array([[0, 1], [1, 1]])


def test_hand_worked():
    # class 0: TP 1, FN 1; class 1: TP 2, FP 1
    assert metrics.pixel_accuracy(Y_TRUE, Y_PRED, 2) == 0.75
    np.testing.assert_allclose(metrics.per_class_iou(Y_TRUE, Y_PRED, 2), [1 / 2, 2 / 3])
    np.testing.assert_allclose(metrics.per_class_dice(Y_TRUE, Y_PRED, 2), [2 / 3, 4 / 5])
    assert metrics.mean_iou(Y_TRUE, Y_PRED, 2) == pytest.approx(7 / 12)
    assert metrics.mean_dice(Y_TRUE, Y_PRED, 2) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_all_zero_masks_and_absent_classes():
    empty = np.zeros((4, 4), bool)
    np.testing.assert_array_equal(metrics.per_class_iou(empty, empty, 2), [1, np.nan])
    assert metrics.mean_iou(empty, empty, 2) == 1.0 and metrics.mean_dice(empty, empty, 2) == 1.0
    # an empty prediction of a present object: foreground IoU 0
    truth = empty.copy()
    truth[:2, :2] = True
    np.testing.assert_allclose(metrics.per_class_iou(truth, empty, 2), [12 / 16, 0])
    # class 2 absent from both maps is left out of the mean
    assert metrics.mean_iou(Y_TRUE, Y_PRED, 3) == pytest.approx(7 / 12)
    assert np.isnan(metrics.per_class_dice(Y_TRUE, Y_PRED, 3)[2])


def test_ignore_index_leaves_pixels_out():
    y_true = np.array([[0, 255], [1, 255]])
    y_pred = np.array([[0, 0], [1, 0]])
    assert metrics.pixel_accuracy(y_true, y_pred, 2, ignore_index=255) == 1.0
    assert metrics.mean_iou(y_true, y_pred, 2, ignore_index=255) == 1.0
    with pytest.raises(ValueError, match="y_true has class indices outside"):
        metrics.mean_iou(y_true, y_pred, 2, ignore_index=-1)  # 255 is then an unknown class
    everything_ignored = np.full((2, 2), 255)
    assert np.isnan(metrics.pixel_accuracy(everything_ignored, y_pred, 2, ignore_index=255))
    assert np.isnan(metrics.mean_iou(everything_ignored, y_pred, 2, ignore_index=255))


def test_symmetry_bounds_and_dice_iou_relation():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (2, 8, 8)), rng.integers(0, 3, (2, 8, 8))
    iou, dice = metrics.per_class_iou(a, b, 3), metrics.per_class_dice(a, b, 3)
    np.testing.assert_allclose(metrics.per_class_iou(b, a, 3), iou, rtol=0, atol=1e-15)
    np.testing.assert_allclose(metrics.per_class_dice(b, a, 3), dice, rtol=0, atol=1e-15)
    np.testing.assert_allclose(dice, 2 * iou / (1 + iou), rtol=0, atol=1e-15)
    assert np.all((iou > 0) & (iou < dice) & (dice < 1))
    order = rng.permutation(a.size)
    shuffled = metrics.mean_iou(a.ravel()[order], b.ravel()[order], 3)
    assert shuffled == pytest.approx(metrics.mean_iou(a, b, 3), abs=1e-15)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.mean_iou(Y_TRUE, Y_PRED[0], 2), "same shape"),
        (lambda: metrics.mean_iou(Y_TRUE, Y_PRED + 1, 2), "y_pred has class indices outside"),
        (lambda: metrics.mean_iou(Y_TRUE * 0.5, Y_PRED, 2), "y_true must be an array of int class indices"),
        (lambda: metrics.mean_iou(Y_TRUE, Y_PRED, 2, ignore_index=1), "ignore_index must be an int outside"),
        (lambda: metrics.pixel_accuracy(Y_TRUE, Y_PRED, 0), "num_classes must be an int >= 1"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["segmentation"])
def test_agrees_with_scikit_learn(name, seed):
    assert parity.run("segmentation", name, seed) <= parity.TOLERANCE
