import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError, export
from tfcourse.models.backbones import build_backbone
from tfcourse.models.classifier import build_classifier
from tfcourse.models.image_adapter import ImageAdapter


def _grey(n=4, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


def test_resize_upsamples_bilinearly_and_repeats_grey_into_rgb():
    images = _grey()
    out = keras.ops.convert_to_numpy(ImageAdapter(96, "resize")(images))
    assert out.shape == (4, 96, 96, 3) and out.dtype == np.float32
    expected = tf.image.resize(images.astype(np.float32), (96, 96), method="bilinear").numpy()
    np.testing.assert_allclose(out, np.repeat(expected, 3, axis=-1), atol=1e-3)
    assert 0 <= out.min() and out.max() <= 255


def test_pad_centres_the_image_without_resampling():
    images = _grey()
    out = keras.ops.convert_to_numpy(ImageAdapter(32, "pad", pad_value=7)(images))
    assert out.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(out[:, 2:30, 2:30, 1], images[..., 0].astype(np.float32))
    assert (out[:, :2] == 7).all() and (out[:, :, 30:] == 7).all()


def test_rgb_input_at_the_target_size_is_only_cast():
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    out = keras.ops.convert_to_numpy(ImageAdapter(32, "pad")(images))
    np.testing.assert_array_equal(out, images.astype(np.float32))


@pytest.mark.parametrize("layer, shape, message", [
    (lambda: ImageAdapter(32, "crop"), None, "unknown"),
    (lambda: ImageAdapter(32, "resize"), (28, 28, 2), "1 \\(grey\\) or 3"),
    (lambda: ImageAdapter(32, "pad"), (40, 40, 1), "larger"),
])
def test_bad_settings_are_refused(layer, shape, message):
    with pytest.raises(UserError, match=message):
        layer()(keras.Input(shape, dtype="uint8"))


def test_small_grey_classifier_reloads_and_exports_taking_the_raw_28px_image(tmp_path):
    backbone = build_backbone("mobilenet_v2", "random", 32, width_multiplier=0.35)
    model = build_classifier(backbone, 3, 32, input_shape=(28, 28, 1), fit="resize")
    assert model.input.shape[1:] == (28, 28, 1) and model.input.dtype == "uint8"
    assert model.get_layer("adapter").output.shape[1:] == (32, 32, 3)
    images, labels = _grey(12), np.arange(12) % 3
    probabilities = model.predict(images, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")  # safe mode: the adapter is registered
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), probabilities, atol=1e-6)

    metrics = export.export_classifier(model, str(tmp_path), ["a", "b", "c"], images[:4], images, labels, 1.0)
    assert metrics["image_size"] == 28 and metrics["float32"]["max_abs_diff"] <= export.FLOAT_TFLITE_TOLERANCE
    tflite = export.TFLiteModel(str(tmp_path / "export" / "model_float32.tflite"))
    assert list(tflite.input["shape"]) == [1, 28, 28, 1] and tflite.input["dtype"] == np.uint8
    assert json.load(open(tmp_path / "export" / "export_metrics.json"))["saved_model"]["max_abs_diff"] <= 1e-4
    assert os.path.isfile(tmp_path / "export" / "model_int8.tflite")


def test_default_classifier_has_no_adapter():
    backbone = build_backbone("mobilenet_v2", "random", 32, width_multiplier=0.35)
    model = build_classifier(backbone, 2, 32)
    assert "adapter" not in [layer.name for layer in model.layers]
