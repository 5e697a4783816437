import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfcourse import config
from tfcourse.lessons import keywords


def test_tfds_speech_commands_loads_from_a_local_copy(tmp_path):
    """A prepared local copy of TFDS speech_commands (its own features and version, a few clips) is
    read through the real `tfds.load` path: float clips of exactly 16000 samples."""
    info = tfds.builder("speech_commands", data_dir=str(tmp_path)).info
    rng = np.random.default_rng(0)
    lengths = {"train": 24, "validation": 12, "test": 12}
    audio = {s: rng.integers(-32768, 32767, (n, 16000)).astype("int16") for s, n in lengths.items()}
    tfds.dataset_builders.store_as_tfds_dataset(
        name="speech_commands", version=str(info.version), features=info.features, data_dir=str(tmp_path),
        split_datasets={s: tf.data.Dataset.from_tensor_slices({"audio": a, "label": np.arange(len(a)) % 12})
                        for s, a in audio.items()},
    )
    data = keywords.DataConfig(source="tfds:speech_commands", tfds_data_dir=str(tmp_path))
    clips, class_names, summary = keywords.load_clips(data, str(tmp_path / "work"))
    assert class_names[:2] == ["down", "go"] and len(class_names) == 12
    assert summary["num_skipped"] == 0
    for split, expected in audio.items():
        waveforms, labels = zip(*[(w.numpy(), int(y)) for w, y in clips[split]])
        assert len(waveforms) == len(expected) and sorted(labels) == sorted(np.arange(len(expected)) % 12)
        read = {round(float(w[0]), 6) for w in waveforms}
        assert read == {round(float(a[0]) / 32768.0, 6) for a in expected}  # scaled to [-1, 1)
        assert all(w.shape == (16000,) and w.dtype == np.float32 for w in waveforms)


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
