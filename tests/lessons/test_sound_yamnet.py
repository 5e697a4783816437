import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError, cli, config
from tfcourse.lessons import sound_yamnet
from tfcourse.models import yamnet


def test_smoke_run_writes_report_plots_and_checked_exports(tmp_path):
    smoke = config.load(sound_yamnet.Config, base=sound_yamnet.SMOKE, overrides=["train.fine_tune_epochs=1"])
    report = sound_yamnet.run(smoke, str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "sound-yamnet"
    for name in ("training_curves.png", "confusion_matrix.png", "clip.png", "export/saved_model/saved_model.pb",
                 "export/model_float32.tflite", "export/model_dynamic_range.tflite", "export/labels.txt"):
        assert os.path.exists(tmp_path / name), name
    assert report["backbone"]["pretrained"] is False and "randomly initialised" in report["note"]
    assert report["data"]["split_sizes"] == {"train": 12, "validation": 6, "test": 6}  # 8 a class: 4, 2, 2
    assert set(report["metrics"]) == {"yamnet_head", "fine_tuned", "spectrogram_cnn"}
    assert report["export"]["float32"]["max_abs_diff"] <= 1e-4
    assert report["export"]["float32"]["audio_seconds_per_cpu_second"] > 1
    assert report["embedding_cache"]["speedup"] > 1  # a cached epoch is cheaper than recomputing

    # `tfcourse predict` on WAV files: the SavedModel and the TFLite model agree; other rates are resampled
    clip = sorted(glob.glob(str(tmp_path / "**" / "*.wav"), recursive=True))[0]
    t = np.arange(8000) / 8000
    slow = tmp_path / "slow.wav"
    slow.write_bytes(tf.audio.encode_wav(0.5 * np.sin(2 * np.pi * 440 * t)[:, None].astype("float32"), 8000).numpy())
    classes = len(report["data"]["class_names"])
    saved, lite = (cli.predict_files(str(tmp_path), [clip, str(slow)], classes, fmt) for fmt in ("saved_model", "tflite"))
    for a, b in zip(saved, lite):
        assert [c["class"] for c in a["top_k"]] == [c["class"] for c in b["top_k"]]
        np.testing.assert_allclose([c["probability"] for c in a["top_k"]], [c["probability"] for c in b["top_k"]], atol=1e-4)
        assert abs(sum(c["probability"] for c in a["top_k"]) - 1) < 1e-4
    assert saved[1]["seconds"] == 1.0  # 8,000 samples at 8 kHz, resampled to 16,000
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    with pytest.raises(UserError, match="broken.wav"):
        sound_yamnet.predict_files(str(tmp_path), [str(broken)])


def test_real_esc50_subset_with_imported_yamnet_beats_the_spectrogram_cnn(assets_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFCOURSE_ASSETS", assets_dir)
    cfg = config.load(sound_yamnet.Config, "configs/sound-yamnet-assets.yaml",
                      ["train.head_epochs=20", "train.baseline_epochs=10"])
    clips, indices, split_by = sound_yamnet.load_clips(cfg.data, str(tmp_path))
    assert "source recording" in split_by and "[1, 88, 2]" in split_by  # the subset's folds are too uneven
    for a in ("train", "validation", "test"):
        for b in ("train", "validation", "test"):
            if a < b:
                assert not set(clips.groups[indices[a]]) & set(clips.groups[indices[b]])
    model, source, pretrained = yamnet.load_pretrained(cfg.model.weights, cfg.model.hub_handle)
    assert pretrained and source.startswith("tflite:")
    features = sound_yamnet.frame_features(model, clips, indices["test"][:3])
    patches, embeddings = features[indices["test"][0]]
    assert patches.shape == (10, 96, 64) and embeddings.shape == (10, 1024)  # 5 s clips


def test_unknown_weights_are_refused():
    with pytest.raises(UserError, match="model.weights"):
        yamnet.load_pretrained("yamnet.h5")
