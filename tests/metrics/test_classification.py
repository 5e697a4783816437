import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics


def test_classification_report_hand_worked():
    # true: a a a b b c ; predicted: a a b b c c
    report = metrics.classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (report["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"], c["support"]) == (0.5, 1.0, 1)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert report["macro_f1"] == pytest.approx(np.mean(f1))
    assert report["weighted_f1"] == pytest.approx(np.dot(f1, [3, 2, 1]) / 6)


def test_class_never_predicted_or_absent_scores_zero():
    report = metrics.classification_report([0, 0, 1], [0, 0, 0], ["a", "b", "c"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["per_class"]["c"]["support"] == 0


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="int class indices"):
        metrics.confusion_matrix([0.0, 1.0], [0, 1], 2)
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion_matrix([0, 1], [0], 2)


def test_report_keys_are_unchanged():
    report = metrics.classification_report([0, 1], [0, 0], ["a", "b"])
    assert set(report) == {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix", "num_examples"}
    assert set(report["per_class"]["a"]) == {"precision", "recall", "f1", "support"}
    assert report["num_examples"] == 2 and isinstance(report["confusion_matrix"], list)


def test_accuracy_hand_worked_and_empty():
    assert metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert metrics.accuracy([], []) == 0.0


def test_top_k_accuracy_counts_a_tie_at_the_kth_place_as_in():
    scores = [[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]]
    assert metrics.top_k_accuracy([2, 1, 2], scores, k=1) == 0.0
    assert metrics.top_k_accuracy([2, 1, 2], scores, k=2) == pytest.approx(2 / 3)
    assert metrics.top_k_accuracy([2, 1, 2], scores, k=3) == 1.0
    assert metrics.top_k_accuracy([1], [[0.5, 0.5]], k=1) == 1.0


def test_precision_recall_f1_averages_hand_worked():
    y_true, y_pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    precision, recall, f1 = metrics.precision_recall_f1(y_true, y_pred, 3)
    np.testing.assert_allclose(precision, [1, 0.5, 0.5])
    np.testing.assert_allclose(recall, [2 / 3, 0.5, 1])
    assert metrics.precision_recall_f1(y_true, y_pred, 3, "macro")[0] == pytest.approx(2 / 3)
    assert metrics.precision_recall_f1(y_true, y_pred, 3, "micro") == (4 / 6, 4 / 6, 4 / 6)
    weighted = metrics.precision_recall_f1(y_true, y_pred, 3, "weighted")
    assert weighted[0] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert weighted[2] == pytest.approx(np.dot(f1, [3, 2, 1]) / 6)


def test_weighted_recall_equals_accuracy_scores_are_bounded_and_sample_order_free():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    scores = np.hstack(metrics.precision_recall_f1(y_true, y_pred, 4))
    assert np.all((scores > 0) & (scores < 1))
    order = rng.permutation(300)
    np.testing.assert_array_equal(np.hstack(metrics.precision_recall_f1(y_true[order], y_pred[order], 4)), scores)
    weighted_recall = metrics.precision_recall_f1(y_true, y_pred, 4, "weighted")[1]
    assert weighted_recall == pytest.approx(metrics.accuracy(y_true, y_pred))


def test_roc_curve_hand_worked():
    fpr, tpr, thresholds = metrics.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_roc_tied_scores_move_together_and_count_one_half():
    fpr, tpr, thresholds = metrics.roc_curve([0, 1, 1], [0.5, 0.5, 0.9])
    np.testing.assert_array_equal(fpr, [0, 0, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1])
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert metrics.roc_auc([0, 1, 1], [0.5, 0.5, 0.9]) == 0.75


def test_roc_auc_is_nan_without_positives_and_ovr_skips_absent_classes():
    fpr, tpr, _ = metrics.roc_curve([0, 0], [0.1, 0.2])
    np.testing.assert_array_equal(fpr, [0, 0.5, 1])
    assert np.all(np.isnan(tpr))
    assert np.isnan(metrics.roc_auc([0, 0], [0.1, 0.2]))
    scores = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]
    # class 2 never occurs: the mean is over classes 0 (AUC 1) and 1 (positives 1, 3 vs negatives 0, 2: AUC 0.75)
    assert metrics.roc_auc_ovr([0, 1, 0, 1], scores) == pytest.approx((1 + 0.75) / 2)


def test_roc_auc_properties():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 100)
    scores = np.round(rng.random(100) + 0.3 * y_true, 1)
    auc = metrics.roc_auc(y_true, scores)
    order = rng.permutation(100)
    assert metrics.roc_auc(y_true[order], scores[order]) == pytest.approx(auc, abs=1e-12)
    assert metrics.roc_auc(1 - y_true, scores) == pytest.approx(1 - auc, abs=1e-12)
    assert metrics.roc_auc(y_true, np.exp(scores)) == pytest.approx(auc, abs=1e-12)
    assert 0.5 < auc < 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.top_k_accuracy([0], [[0.5, 0.5]], k=0), "k must be an int >= 1"),
        (lambda: metrics.top_k_accuracy([0], [0.5, 0.5]), "scores must be 2-D"),
        (lambda: metrics.top_k_accuracy([2], [[0.5, 0.5]]), "y_true has class indices outside"),
        (lambda: metrics.roc_curve([0, 2], [0.1, 0.2]), "y_true must be binary"),
        (lambda: metrics.roc_auc([0, 1], [0.1, np.nan]), "scores has NaN"),
        (lambda: metrics.roc_auc([], []), "y_true is empty"),
        (lambda: metrics.roc_auc([True, False], ["a", "b"]), "scores must hold real numbers"),
        (lambda: metrics.precision_recall_f1([0], [0], 2, average="mean"), "average must be one of"),
        (lambda: metrics.confusion_matrix([0], [0], 0), "num_classes must be an int >= 1"),
        (lambda: metrics.roc_auc_ovr([0, 1], [[0.5, 0.5]]), "same length"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["classification"])
def test_agrees_with_scikit_learn(name, seed):
    assert parity.run("classification", name, seed) <= parity.TOLERANCE
