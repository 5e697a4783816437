import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.models.test_movinet import _randomise
from tfcourse import UserError, cli, config, export
from tfcourse.data import boxes, video
from tfcourse.lessons import video_movinet
from tfcourse.models import movinet

SIZE = 48


def test_smoke_run_writes_report_plots_and_checked_exports(tmp_path):
    smoke = config.load(video_movinet.Config, base=video_movinet.SMOKE)
    report = video_movinet.run(smoke, str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "video-movinet"
    for name in ("training_curves.png", "confusion_matrix.png", "stream_probabilities.png", "export/labels.txt",
                 "export/saved_model/saved_model.pb", "export/model_float32.tflite", "export/stream_float32.tflite"):
        assert os.path.exists(tmp_path / name), name
    assert not os.path.exists(tmp_path / "export" / "stream_saved_model")
    synthetic = report["data"]["synthetic"]
    assert synthetic["per_format"] == {"mp4": 18, "avi": 18, "gif": 12}  # 8 clips a class, formats in turn
    assert report["data"]["split_sizes"] == {"train": 24, "validation": 12, "test": 12}
    assert "randomly initialised" in report["note"] and report["backbone"]["checkpoint"] is None
    for stage in ("frozen", "fine_tuned"):
        test = report["metrics"][stage]["test"]
        assert test["top_5_accuracy"] >= test["accuracy"] and np.sum(test["confusion_matrix"]) == 12
    stream = report["export"]["stream_float32"]
    assert report["export"]["input_shape"] == [6, SIZE, SIZE, 3]
    assert stream["max_abs_diff"] <= 1e-3 and report["export"]["keras_stream"]["max_abs_diff"] <= 1e-5
    assert stream["states"] == len(movinet.stream_state_shapes("tiny", SIZE)) and stream["ms_per_frame_median"] > 0
    assert "CONV_3D" in stream["ops"] and all(op.isupper() for op in stream["ops"])  # builtin ops only
    assert report["peak_memory_mb"] > 100

    clip_file = os.path.join(synthetic["root"], "left", "left_000.mp4")
    predictions = {fmt: cli.predict_files(str(tmp_path), [clip_file], 6, fmt)[0]["top_k"] for fmt in ("saved_model", "tflite")}
    by_class = {fmt: {p["class"]: p["probability"] for p in top} for fmt, top in predictions.items()}
    assert set(by_class["saved_model"]) == set(report["data"]["class_names"])
    assert max(abs(by_class["saved_model"][c] - by_class["tflite"][c]) for c in by_class["tflite"]) < 1e-4
    assert abs(sum(by_class["tflite"].values()) - 1) < 1e-5
    with pytest.raises(UserError, match="no_such.mp4"):
        cli.predict_files(str(tmp_path), [str(tmp_path / "no_such.mp4")], 2, "tflite")


def test_export_check_clips_are_spread_over_the_classes():
    labels = np.repeat(np.arange(4), 10)  # ordered by class, as the splits are
    dataset = video.video_array_dataset(np.zeros((40, 2, 4, 4, 3), np.uint8), labels, 8, training=False, seed=0)
    clips, picked = video_movinet.clips_and_labels(dataset, 8, 8)
    assert clips.shape == (8, 2, 4, 4, 3) and picked.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def _checked_models(frames=4):
    backbone = movinet.movinet_backbone("tiny", causal=True, size=SIZE)
    model = movinet.movinet_classifier(backbone, num_classes=3, head_filters=16)
    _randomise(model)
    return model, movinet.stream_classifier(model, "tiny", SIZE)


def test_video_export_checks_the_stream_model_frame_by_frame(tmp_path):
    model, stream = _checked_models()
    clips = np.random.default_rng(0).uniform(0, 1, (3, 5, SIZE, SIZE, 3)).astype("float32")
    metrics, per_frame = export.export_video_classifier(model, stream, str(tmp_path), ["a", "b", "c"], clips, [0, 1, 2])
    reference = model.predict_on_batch(clips)
    assert np.abs(reference - 1 / 3).max() > 0.05  # outputs differ by clip, so the checks below can fail
    assert per_frame.shape == (3, 5, 3)
    np.testing.assert_allclose(per_frame[:, -1], reference, atol=1e-3)
    assert metrics["stream_float32"]["max_abs_diff"] <= 1e-3 and metrics["float32"]["max_abs_diff"] <= 1e-4
    assert np.abs(per_frame[:, 0] - per_frame[:, -1]).max() > 1e-3  # the stream's memory changes its answer
    assert sorted(os.listdir(tmp_path / "export")) == ["export_metrics.json", "labels.txt", "model_dynamic_range.tflite",
                                                       "model_float32.tflite", "saved_model", "stream_float32.tflite"]

    # A stream model that is not the clip model's stream form is rejected; the kept export stays.
    before = (tmp_path / "export" / "stream_float32.tflite").read_bytes()
    _, other_stream = _checked_models()
    _randomise(other_stream, seed=5)
    with pytest.raises(export.ExportCheckFailed, match="keras_stream"):
        export.export_video_classifier(model, other_stream, str(tmp_path), ["a", "b", "c"], clips, [0, 1, 2])
    assert (tmp_path / "export" / "stream_float32.tflite").read_bytes() == before


def test_a_folder_of_videos_with_bad_files_is_counted_and_trained_on(tmp_path):
    root = tmp_path / "videos"
    video.write_synthetic_actions(str(root), boxes.textured_backgrounds(4), 5, num_frames=4, size=SIZE,
                                  actions=("left", "right"))
    (root / "left" / "empty.mp4").write_bytes(b"")
    video.write_video(str(root / "right" / "short.avi"), np.zeros((2, SIZE, SIZE, 3), np.uint8))
    cfg = config.load(video_movinet.Config, base=video_movinet.SMOKE, overrides=[
        f"data.source={root}", "data.num_frames=4", "data.validation_fraction=0.2", "data.test_fraction=0.2",
        "train.frozen_epochs=1", "train.fine_tune_epochs=0"])
    report = video_movinet.run(cfg, str(tmp_path / "run"))
    skipped = report["data"]["skipped"]
    assert skipped["unreadable"]["count"] == 1 and skipped["unreadable"]["files"][0]["path"].endswith("empty.mp4")
    assert skipped["too_short"]["count"] == 1 and skipped["too_short"]["files"][0]["frames"] == 2
    assert report["data"]["num_videos"] == 10 and report["data"]["class_names"] == ["left", "right"]
    assert set(report["metrics"]) == {"frozen"}


def test_missing_or_foreign_checkpoints_are_refused(tmp_path):
    backbone = movinet.movinet_backbone("tiny", causal=True, size=SIZE)
    with pytest.raises(UserError, match="not a TF checkpoint"):
        movinet.load_model_garden_checkpoint(backbone, str(tmp_path))
    prefix = tf.train.Checkpoint(model=tf.Module()).write(str(tmp_path / "unpacked" / "movinet_a0" / "ckpt-1"))
    assert movinet.model_garden_checkpoint_path(str(tmp_path / "unpacked")) == prefix  # found at any depth
    with pytest.raises(UserError, match="has no weight for stem_conv3d/kernel"):
        movinet.load_model_garden_checkpoint(backbone, str(tmp_path / "unpacked"))
