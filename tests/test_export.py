import os

import numpy as np
import pytest

from tests.conftest import save_feature_vector_module
from tfcourse import export
from tfcourse.models.backbones import build_backbone
from tfcourse.models.classifier import build_classifier


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """uint8 images -> stand-in hub feature vector -> softmax, with a head that separates inputs."""
    module_dir = save_feature_vector_module(tmp_path_factory.mktemp("hub") / "feature_vector")
    model = build_classifier(build_backbone("efficientnet_b0", "hub", 32, hub_handle=module_dir), 3, 32)
    model.layers[-1].set_weights([np.random.default_rng(0).normal(0, 1, (8, 3)), np.array([0.5, -0.2, 0.1])])
    return model


def _data(n=24):
    rng = np.random.default_rng(1)
    colours = rng.uniform(0, 200, (n, 1, 1, 3))  # each image its own colour, plus noise
    images = np.clip(colours + rng.uniform(0, 55, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return images, rng.integers(0, 3, n)


def test_export_writes_checked_models_and_they_serve(tiny_model, tmp_path):
    images, labels = _data()
    metrics = export.export_classifier(tiny_model, str(tmp_path), ["a", "b", "c"], images[:8], images, labels, 1.0)
    folder = tmp_path / "export"
    assert sorted(os.listdir(folder)) == ["export_metrics.json", "labels.txt", "model_dynamic_range.tflite",
                                          "model_float32.tflite", "model_int8.tflite", "saved_model"]
    assert not (tmp_path / "export.tmp").exists()
    assert (folder / "labels.txt").read_text().split() == ["a", "b", "c"]
    assert metrics["saved_model"]["max_abs_diff"] <= export.SAVED_MODEL_TOLERANCE
    assert metrics["float32"]["max_abs_diff"] <= export.FLOAT_TFLITE_TOLERANCE
    keras_probabilities = tiny_model.predict(images, verbose=0)
    assert keras_probabilities.std(axis=0).max() > 0.05  # outputs depend on the image
    for fmt in export.FORMATS:
        predict, image_size, class_names = export.load_exported(str(tmp_path), fmt)
        probabilities = export.predict_batches(predict, images, batch_size=5)
        assert image_size == 32 and class_names == ["a", "b", "c"] and probabilities.shape == (24, 3)
        tolerance = 1e-4 if fmt in ("saved_model", "tflite") else 0.2
        np.testing.assert_allclose(probabilities, keras_probabilities, atol=tolerance)
    int8 = export.TFLiteModel(str(folder / "model_int8.tflite"))
    assert int8.input["dtype"] == np.uint8 and int8.output["dtype"] == np.uint8


def test_a_failed_check_keeps_the_previous_export(tiny_model, tmp_path):
    images, labels = _data()
    export.export_classifier(tiny_model, str(tmp_path), ["a", "b", "c"], images[:8], images, labels, 1.0)
    before = (tmp_path / "export" / "model_float32.tflite").read_bytes()
    with pytest.raises(export.ExportCheckFailed, match="dynamic_range.*Nothing was replaced"):
        # a negative allowance: any quantized model fails, as a broken one would
        export.export_classifier(tiny_model, str(tmp_path), ["x", "y", "z"], images[:8], images, labels, -1.0)
    assert (tmp_path / "export" / "model_float32.tflite").read_bytes() == before
    assert (tmp_path / "export" / "labels.txt").read_text().split() == ["a", "b", "c"]
    assert (tmp_path / "export.tmp" / "export_metrics.json").exists()  # the rejected one, to inspect


def test_classifier_table_has_a_row_per_format():
    row = {"accuracy": 0.5, "max_abs_diff": 1e-6, "size_bytes": 2048}
    lines = export.classifier_table({name: row for name in ("saved_model", *export.TFLITE_VARIANTS)})
    assert lines[2] == "| saved_model | 0.500 | 1.00e-06 | 2 |" and len(lines) == 2 + 1 + len(export.TFLITE_VARIANTS)


def test_named_outputs_export_checks_every_output_and_serves(tmp_path):
    import keras

    images_in = keras.Input((16, 16, 3), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(images_in))
    outputs = {"class": keras.layers.Dense(3, activation="softmax", name="class")(x),
               "box": keras.layers.Dense(4, activation="sigmoid", name="box")(x)}
    model = keras.Model(images_in, outputs)
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
    metrics = export.export_named_outputs(model, str(tmp_path), images, ["a", "b", "c"],
                                          score=lambda out: {"mean_box": float(out["box"].mean())}, batch_size=2)
    assert metrics["outputs"] == ["box", "class"] and metrics["image_size"] == 16
    for fmt in ("saved_model", "float32"):
        assert set(metrics[fmt]["max_abs_diff"]) == {"box", "class"}
        assert max(metrics[fmt]["max_abs_diff"].values()) <= 1e-4
        assert metrics[fmt]["mean_box"] == pytest.approx(metrics["keras"]["mean_box"], abs=1e-5)
    served = export.TFLiteSignature(str(tmp_path / "export" / "model_float32.tflite"))(images)
    np.testing.assert_allclose(served["box"], model.predict_on_batch(images)["box"], atol=1e-5)
    assert not os.path.exists(tmp_path / "export.tmp")
