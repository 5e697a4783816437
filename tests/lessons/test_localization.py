import json
import os

import keras
import numpy as np
import pytest

from tfcourse import UserError, cli, config
from tfcourse.lessons import localization
from tfcourse.models.backbones import Backbone


def test_smoke_run_writes_report_plots_and_checked_exports(tmp_path):
    smoke = config.load(localization.Config, base=localization.SMOKE, overrides=["train.feature_epochs=2"])
    report = localization.run(smoke, str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "localization"
    for name in ("training_curves.png", "boxes.png", "summary.md", "export/saved_model/saved_model.pb",
                 "export/model_float32.tflite", "export/labels.txt", "checkpoints/voc/ImageSets/Main/test.txt"):
        assert os.path.exists(tmp_path / name), name
    assert report["backbone"]["pretrained"] is False and "randomly initialised" in report["note"]
    assert "generated shapes" in report["note"]
    # 12 shapes a class, 3 classes: per class 8 train, 2 validation, 2 test objects; 3 and 2 pastes each
    assert report["data"]["split_sizes"] == {"train": 72, "validation": 12, "test": 12}
    assert report["data"]["num_skipped"] == 0
    assert list(report["metrics"]) == ["scratch"]  # a random backbone is trained whole, not frozen
    test = report["metrics"]["scratch"]["test"]
    assert 0 <= test["mean_iou"] <= 1 and 0 <= test["share_iou_at_least_0.5"] <= 1 and test["count"] == 12
    for fmt in ("saved_model", "float32"):
        assert max(report["export"][fmt]["max_abs_diff"].values()) <= 1e-4
        assert report["export"][fmt]["mean_iou"] == pytest.approx(test["mean_iou"], abs=1e-3)

    # `tfcourse predict` on the run: top-k classes and a box per image, the same from both formats.
    image = next(p for p in sorted((tmp_path / "checkpoints" / "voc" / "JPEGImages").iterdir()))
    answers = {fmt: cli.predict_files(str(tmp_path), [str(image)], 2, fmt)[0] for fmt in ("saved_model", "tflite")}
    saved, lite = answers["saved_model"], answers["tflite"]
    x_min, y_min, x_max, y_max = saved["box_xyxy"]
    assert 0 <= x_min <= x_max <= 1 and 0 <= y_min <= y_max <= 1
    np.testing.assert_allclose(saved["box_xyxy"], lite["box_xyxy"], atol=1e-3)
    assert [c["class"] for c in saved["top_k"]] == [c["class"] for c in lite["top_k"]]
    assert {c["class"] for c in saved["top_k"]} <= set(report["data"]["class_names"])
    with pytest.raises(UserError, match="saved_model and tflite"):
        cli.predict_files(str(tmp_path), [str(image)], 2, "tflite-int8")
    with pytest.raises(UserError, match="not an image classifier"):
        cli.evaluate_run(str(tmp_path), str(tmp_path), "saved_model")


def _tiny_config(**data):
    return config.load(localization.Config, base={
        "data": {"source": "synthetic", "image_size": 64, **data},
        "model": {"source": "random", "width_multiplier": 0.35, "box_units": 16, "box_channels": 8},
    })


def test_localizer_outputs_probabilities_and_valid_boxes_and_reloads(tmp_path):
    model, backbone = localization.build_localizer(_tiny_config(), num_classes=3)
    assert [tuple(o.shape[1:3]) for o in backbone.features.outputs] == [(4, 4), (2, 2)]  # 64 / 16 and 64 / 32
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype("uint8")
    outputs = model.predict_on_batch(images)
    assert outputs["class"].shape == (4, 3) and outputs["box"].shape == (4, 4)
    np.testing.assert_allclose(outputs["class"].sum(-1), 1, atol=1e-5)
    assert np.all(outputs["box"][:, 2:] >= outputs["box"][:, :2])  # centre +- half size
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    for key in outputs:
        np.testing.assert_allclose(reloaded.predict_on_batch(images)[key], outputs[key], atol=1e-6)


def test_box_loss_is_one_minus_generalised_iou():
    model, _ = localization.build_localizer(_tiny_config(), num_classes=3)
    localization.compile_localizer(model, 1e-3, box_loss_weight=2.0)
    true, predicted = np.array([[0, 0, 0.5, 0.5]], "float32"), np.array([[0.25, 0.25, 0.75, 0.75]], "float32")
    iou = 0.0625 / (0.25 + 0.25 - 0.0625)
    giou = iou - (0.75**2 - (0.25 + 0.25 - 0.0625)) / 0.75**2  # minus the empty share of the enclosing box
    box_loss = model.loss["box"](true, predicted)
    assert float(box_loss) == pytest.approx(1 - giou, abs=1e-5)


def test_localization_metrics_on_known_boxes():
    true = {"box": np.array([[0, 0, 0.5, 0.5], [0, 0, 1, 1], [0.5, 0.5, 1, 1]], "float32"), "class": np.array([0, 1, 1])}
    predicted = {"box": np.array([[0, 0, 0.5, 0.5], [0, 0, 1, 0.4], [0, 0, 0.25, 0.25]], "float32"),
                 "class": np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])}
    result = localization.localization_metrics(predicted, true, ["a", "b"])
    assert result["mean_iou"] == pytest.approx((1 + 0.4 + 0) / 3)
    assert result["share_iou_at_least_0.5"] == pytest.approx(1 / 3)
    assert result["class_accuracy"] == pytest.approx(2 / 3) and result["both_right"] == pytest.approx(1 / 3)


def test_a_pooled_only_backbone_is_refused():
    vector_only = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    with pytest.raises(UserError, match="feature map"):
        localization.feature_maps(Backbone(keras.layers.Rescaling(1.0), vector_only, "hub:x", True), 8)


def test_pasting_needs_objects_and_backgrounds(tmp_path):
    data = config.load(localization.Config, overrides=["data.source=pasted"]).data
    with pytest.raises(UserError, match="data.objects"):
        localization.write_pasted_data(data, str(tmp_path / "voc"))
    with pytest.raises(UserError, match="multiple of 32"):
        config.load(localization.Config, overrides=["data.image_size=100"])
    with pytest.raises(UserError, match="scale_min"):
        config.load(localization.Config, overrides=["data.scale_min=0.9", "data.scale_max=0.5"])


def test_assets_config_reads_and_the_imported_backbone_works_at_its_size(assets_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFCOURSE_ASSETS", assets_dir)
    cfg = config.load(localization.Config, "configs/localization-assets.yaml",
                      ["data.pastes_per_object=1", "data.evaluation_pastes_per_object=1"])
    assert cfg.data.objects == os.path.join(assets_dir, "data/plant_apple") and cfg.data.image_size == 160
    class_names, summary = localization.write_pasted_data(cfg.data, str(tmp_path / "voc"))
    assert len(class_names) == 4 and summary["objects"] == 180 and summary["backgrounds"] == 100
    assert summary["source_skipped"] == [] and sum(summary["images_per_split"].values()) == 180
    assert summary["backgrounds_per_split"] == {"train": 60, "validation": 20, "test": 20}
    model, backbone = localization.build_localizer(cfg, len(class_names))
    assert backbone.pretrained and [o.shape[1:] for o in backbone.features.outputs] == [(10, 10, 576), (5, 5, 1280)]
    outputs = model.predict_on_batch(np.zeros((1, 160, 160, 3), "uint8"))
    assert outputs["box"].shape == (1, 4) and np.isfinite(outputs["box"]).all()
