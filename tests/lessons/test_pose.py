import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError, cli, config
from tfcourse.lessons import pose


def test_smoke_run_writes_report_plots_checked_exports_and_predicts_photos(tmp_path, monkeypatch, capsys):
    smoke = config.load(pose.Config, base=pose.SMOKE, overrides=["train.epochs=15"])
    report = pose.run(smoke, str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "pose"
    for name in ("training_curves.png", "confusion_matrix.png", "skeletons.png", "export/saved_model/saved_model.pb",
                 "export/model_float32.tflite", "export/model_dynamic_range.tflite", "export/labels.txt"):
        assert os.path.exists(tmp_path / name), name
    assert report["data"]["split_sizes"] == {"train": 24 * 5, "validation": 8 * 5, "test": 8 * 5}  # 40 a class
    assert report["metrics"]["test"]["accuracy"] >= 0.8  # the stick-figure classes differ in joint angles
    assert report["export"]["float32"]["max_abs_diff"] <= 1e-4
    assert report["export"]["float32"]["accuracy"] == report["metrics"]["test"]["accuracy"]
    assert "stick-figure" in report["note"] and report["extractor"]["used"] is False
    assert report["pck"] is None and report["photos"] is None

    # `tfcourse predict` dispatches to the lesson: photo -> extractor -> exported classifier.
    csv_keypoints, names, _ = pose.read_keypoint_csv(str(tmp_path / "checkpoints/synthetic_keypoints.csv"))
    photo_size = (300, 300)
    wanted = names.index("t_pose")

    class FakeMoveNet:  # returns a t_pose figure, normalised, for any photo
        def __init__(self, source, input_size=0):
            assert source == smoke.extractor.source

        def __call__(self, image):
            assert image.shape[:2] == photo_size
            return csv_keypoints[wanted] / [photo_size[1], photo_size[0], 1]

    monkeypatch.setattr(pose.movenet, "MoveNet", FakeMoveNet)
    photo = tmp_path / "photo.png"
    photo.write_bytes(tf.io.encode_png(np.zeros((*photo_size, 3), np.uint8)).numpy())
    for fmt in ("saved_model", "tflite"):
        capsys.readouterr()  # drop the training log
        assert cli.main(["predict", str(tmp_path), str(photo), "--format", fmt, "--top-k", "2"]) == 0
        predictions = json.loads(capsys.readouterr().out)
        assert predictions[0]["top_k"][0]["class"] == "t_pose" and len(predictions[0]["top_k"]) == 2


def test_embedding_removes_position_and_scale_and_the_model_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 300, (4, 17, 3)).astype("float32")
    moved = keypoints * [2.5, 2.5, 1] + [40, -70, 0]
    embedding = pose.PoseEmbedding()
    np.testing.assert_allclose(embedding(moved), embedding(keypoints), atol=1e-5)
    e = np.asarray(embedding(keypoints)).reshape(4, 17, 2)
    hips = (e[:, 11] + e[:, 12]) / 2
    np.testing.assert_allclose(hips, 0, atol=1e-6)
    assert np.linalg.norm(e, axis=-1).max() <= 1 + 1e-6

    model = pose.build_classifier(3, hidden_units=16)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(keypoints, verbose=0), model.predict(keypoints, verbose=0), atol=1e-6)


def test_keypoint_csv_reading_counts_bad_rows_and_swaps_on_request(tmp_path):
    path = pose.write_synthetic_keypoint_csv(str(tmp_path / "k.csv"), per_class=4)
    keypoints, names, skipped = pose.read_keypoint_csv(path)
    assert keypoints.shape == (20, 17, 3) and sorted(set(names)) == ["arms_down", "arms_up", "squat", "t_pose", "tree"]
    swapped, _, _ = pose.read_keypoint_csv(path, xy_swapped=True)
    np.testing.assert_array_equal(swapped[..., 0], keypoints[..., 1])
    with open(path, "a") as f:  # a bad row, and a row with no class_name: class from the file name's folder
        f.write("tree/bad.jpg," + ",".join(["nan"] * 51) + ",tree\n")
        f.write("tree/ok.jpg," + ",".join(["1"] * 51) + ",\n")
    keypoints, names, skipped = pose.read_keypoint_csv(path)
    assert len(keypoints) == 21 and names[-1] == "tree"
    assert skipped == [{"row": 22, "file_name": "tree/bad.jpg", "reason": "non-numeric keypoints"}]
    (tmp_path / "short.csv").write_text("file_name,nose_x\na.jpg,1\n")
    with pytest.raises(UserError, match="nose_y"):
        pose.read_keypoint_csv(str(tmp_path / "short.csv"))


def test_unset_or_mismatched_data_are_user_errors(tmp_path):
    cfg = config.load(pose.Config)
    with pytest.raises(UserError, match="data.source is not set"):
        pose.load_data(cfg.data, None, str(tmp_path), str(tmp_path))
    train_csv = pose.write_synthetic_keypoint_csv(str(tmp_path / "train.csv"), per_class=6)
    other = tmp_path / "test.csv"
    other.write_text(open(train_csv).read().replace(",tree\n", ",lotus\n"))
    cfg = config.load(pose.Config, overrides=[f"data.source={train_csv}", f"data.test_source={other}"])
    with pytest.raises(UserError, match="lotus"):
        pose.load_data(cfg.data, None, str(tmp_path), str(tmp_path))


def test_photo_folder_keypoints_are_cached_and_bad_photos_counted(tmp_path):
    """Folder-of-photos mode with a stand-in extractor: undecodable and unconfident photos are
    skipped and reported; a second pass reads every keypoint from the cache."""
    for name in ("a", "b"):
        os.makedirs(tmp_path / "photos" / name)
        for i, height in enumerate((40, 50, 60)):
            image = np.zeros((height, 30 + i, 3), np.uint8)
            (tmp_path / "photos" / name / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    (tmp_path / "photos" / "a" / "broken.jpg").write_bytes(b"not a jpeg")

    class StandIn:
        source, input_size, calls = "stand-in", 192, 0

        def __call__(self, image):
            StandIn.calls += 1
            score = 0.05 if image.shape[0] == 60 else 0.8  # the 60 px photos have "no confident pose"
            return np.tile([[0.5, 0.25, score]], (17, 1)).astype("float32")

    cache = str(tmp_path / "cache.json")
    keypoints, names, files, skipped = pose.load_photo_folder(str(tmp_path / "photos"), StandIn(), cache, 0.2)
    assert StandIn.calls == 6 and len(keypoints) == 4 and names == ["a", "a", "b", "b"]
    np.testing.assert_allclose(keypoints[0, 0], [0.5 * 30, 0.25 * 40, 0.8])  # normalised -> pixels
    reasons = sorted(s["reason"].split(":")[0].split(" (")[0] for s in skipped)
    assert reasons == ["no confident pose"] * 2 + ["undecodable"]
    pose.load_photo_folder(str(tmp_path / "photos"), StandIn(), cache, 0.2)
    assert StandIn.calls == 6  # all from the cache


def test_real_assets_pck_photos_and_predict_from_the_tflite_extractor(assets_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TFCOURSE_ASSETS", assets_dir)
    cfg = config.load(pose.Config, "configs/pose-assets.yaml", ["train.epochs=25"])
    report = pose.run(cfg, str(tmp_path))
    assert report["pck"]["pck@0.1"] >= 0.9 and report["extractor"]["kind"] == "tflite"
    assert report["data"]["split_sizes"]["test"] == 495 and report["metrics"]["test"]["accuracy"] >= 0.85
    assert report["photos"]["num_photos"] == 29 and report["photos"]["ignored_folders"] == ["keypoints_csv"]
    assert report["photos"]["accuracy"] >= 0.5  # CSV-trained, applied through our MoveNet
    photo = os.path.join(assets_dir, "data/yoga_poses/cobra/cobra1.jpg")
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path), photo, "--format", "tflite"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top_k"][0]["class"] == "cobra"
