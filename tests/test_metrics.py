import numpy as np
import pytest

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
