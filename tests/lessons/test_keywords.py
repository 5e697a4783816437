import json
import os
import shutil

import numpy as np
import pytest

from tfcourse import config
from tfcourse.lessons import keywords


def test_detections_merge_windows_and_are_scored_against_the_truth():
    class Fixed:  # "yes" from window 5 to 9 (0.5-0.9 s), then "no" at window 20; background elsewhere
        def predict(self, windows, verbose=0):
            p = np.full((len(windows), 3), [0.8, 0.1, 0.1])
            p[5:10], p[20] = [0.05, 0.9, 0.05], [0.1, 0.1, 0.8]
            return p

    detections, _ = keywords.detect(Fixed(), np.zeros(3 * 16000, "float32"), ["_background_", "yes", "no"], 0.1, 0.6)
    assert [(d["word"], d["time"]) for d in detections] == [("yes", 1.2), ("no", 2.5)]
    score = keywords.score_detections(detections, [(1.0, 1.4, "yes"), (2.2, 2.6, "go")])
    assert score == {"precision": 0.5, "recall": 0.5}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_smoke_run_splits_by_voice_streams_and_exports(tmp_path):
    report = keywords.run(config.load(keywords.Config, base=keywords.SMOKE), str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "keywords"
    voices = report["data"]["voices_per_split"]
    assert not set(voices["train"]) & set(voices["test"]) and len(voices["test"]) == 1
    assert report["data"]["split_sizes"] == {"train": 90, "validation": 45, "test": 45}  # (4 words + background) x 9 a voice
    assert set(report["metrics"]) == {"spectrogram_cnn", "yamnet_head"}
    assert report["stream"]["truth"] and 0 <= report["stream"]["recall"] <= 1
    assert report["export"]["float32"]["max_abs_diff"] <= 1e-4
    for name in ("stream.png", "confusion_matrix.png", "training_curves.png", "export/model_float32.tflite"):
        assert os.path.exists(tmp_path / name), name
