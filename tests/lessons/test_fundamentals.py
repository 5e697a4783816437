import json

import pytest
import os

from tfcourse import config
from tfcourse.lessons import fundamentals


def test_smoke_run_writes_every_part_with_its_checks(tmp_path):
    report = fundamentals.run(config.load(fundamentals.Config, base=fundamentals.SMOKE), str(tmp_path))
    assert json.load(open(tmp_path / "report.json")) == json.loads(json.dumps(report))
    for name in ("linear_regression", "activations", "vanishing_gradient", "losses", "optimizers", "batch_norm", "softmax_vs_svm"):
        assert os.path.getsize(tmp_path / f"{name}.png") > 10_000, name
    assert report["linear_regression"]["gap"]["w"] < 0.05  # 50 steps get close to least squares
    assert report["activations"]["relu_over_sigmoid_at_first_layer"] > 100
    assert all(v["max_abs_diff_vs_keras"] < 1e-5 for v in report["losses"].values())
    assert all(v["max_abs_weight_diff_vs_keras"] < 1e-5 and v["steps"] == 20 for v in report["optimizers"].values())
    assert report["batch_norm"]["training"]["max_relative_gradient_diff"] < 1e-5
    assert report["softmax_vs_svm"]["softmax"]["accuracy"] > 0.8 and report["softmax_vs_svm"]["svm"]["accuracy"] > 0.8


def test_expected_calibration_error_hand_worked():
    import numpy as np

    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    # bin (0.8, 0.9]: accuracy 0.5, confidence 0.9; bin (0.5, 0.6]: accuracy 1.0, confidence 0.6
    assert fundamentals.expected_calibration_error(probabilities, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
