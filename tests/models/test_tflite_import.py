import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data.images import decode_image
from tfcourse.export import TFLiteModel
from tfcourse.models.tflite_import import mobilenet_v2_from_tflite


def test_imported_mobilenet_v2_agrees_with_the_tflite_model_on_real_photos(assets_dir):
    path = os.path.join(assets_dir, "models", "imagenet", "mobilenet_v2_1.0_224_quant.tflite")
    photos = sorted(glob.glob(os.path.join(assets_dir, "images", "*.jpg")))
    assert len(photos) == 8
    pixels = np.stack([decode_image(tf.io.read_file(p), 224).numpy() for p in photos])
    model, (scale, offset) = mobilenet_v2_from_tflite(path, include_top=True)
    assert (scale, offset) == (0.0078125, -1.0)  # the file's input quantization: (q - 128) / 128
    keras_probabilities = model.predict(pixels.astype("float32") * scale + offset, verbose=0)
    tflite = TFLiteModel(path)
    tflite_probabilities = np.concatenate([tflite(p[None]) for p in pixels])
    np.testing.assert_array_equal(keras_probabilities.argmax(-1), tflite_probabilities.argmax(-1))
    largest_difference = np.abs(keras_probabilities - tflite_probabilities).max()
    print(f"largest probability difference over 8 photos: {largest_difference:.4f}")
    assert largest_difference < 0.1


def test_feature_extractor_ends_in_1280_features_and_identity_batch_norm(assets_dir):
    path = os.path.join(assets_dir, "models", "imagenet", "mobilenet_v2_1.0_224_quant.tflite")
    backbone, _ = mobilenet_v2_from_tflite(path)
    assert backbone.output.shape == (None, 1280)
    batch_norm = backbone.get_layer("block_5_project_BN")
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 32)).astype("float32")
    np.testing.assert_allclose(batch_norm(x, training=False), x + batch_norm.beta.numpy(), atol=1e-5)


def test_other_tflite_files_are_refused_with_a_reason(tmp_path, assets_dir):
    with pytest.raises(UserError, match="convolutions"):
        mobilenet_v2_from_tflite(os.path.join(assets_dir, "models", "movenet", "movenet_singlepose_lightning_int8.tflite"))
    (tmp_path / "junk.tflite").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a readable TFLite model"):
        mobilenet_v2_from_tflite(str(tmp_path / "junk.tflite"))
