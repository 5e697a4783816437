import os

import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import images
from tfcourse.metrics.pose import pck
from tfcourse.models import movenet


def test_pad_and_unpad_are_inverse_and_keep_aspect():
    rng = np.random.default_rng(0)
    for shape in ((120, 300, 3), (300, 120, 3), (64, 64, 3)):
        image = np.zeros(shape, np.uint8)
        square, padding = movenet.pad_to_square(image, 192)
        assert square.shape == (192, 192, 3) and padding[2] == max(shape[:2])
        xy_score = rng.uniform(0, 1, (17, 3)).astype(np.float32)
        back = movenet.unpad_keypoints(movenet.pad_keypoints(xy_score, padding, shape), padding, shape)
        np.testing.assert_allclose(back, xy_score, atol=1e-5)


def test_a_dot_lands_where_the_padding_maths_says():
    image = np.zeros((100, 250, 3), np.uint8)
    image[70:74, 200:204] = 255  # centre (x, y) = (202, 72) px
    square, padding = movenet.pad_to_square(image, 192)
    y, x = np.unravel_index(square[..., 0].astype(float).argmax(), square.shape[:2])
    expected = movenet.pad_keypoints([[202 / 250, 72 / 100, 1.0]] * 17, padding, image.shape)[0]
    assert abs(y / 192 - expected[0]) < 2 / 192 and abs(x / 192 - expected[1]) < 2 / 192


def _brightest_pixel_module(path):
    """A stand-in for the TF Hub MoveNet module: same signature (int32 [1, H, W, 3] -> output_0
    [1, 1, 17, 3] (y, x, score)); every keypoint is the brightest pixel, normalised."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.int32)])
    def serve(input):
        gray = tf.reduce_sum(input[0], axis=-1)
        width = tf.shape(gray)[1]
        flat = tf.argmax(tf.reshape(gray, [-1]), output_type=tf.int32)
        size = tf.cast(tf.shape(gray)[0], tf.float32)
        yx = tf.cast(tf.stack([flat // width, flat % width]), tf.float32) / size
        row = tf.concat([yx, [0.9]], axis=0)
        return {"output_0": tf.tile(row[None, None, None], [1, 1, 17, 1])}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return str(path)


def test_hub_signature_path_maps_keypoints_to_the_original_image(tmp_path):
    extractor = movenet.MoveNet(_brightest_pixel_module(tmp_path / "movenet"))
    assert extractor.kind == "hub" and extractor.input_size == 192
    image = np.zeros((150, 400, 3), np.uint8)
    image[30, 330] = 255
    keypoints = extractor(image)
    assert keypoints.shape == (17, 3)
    np.testing.assert_allclose(keypoints[0, :2], [330 / 400, 30 / 150], atol=3 / 150)


def test_bad_sources_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        movenet.MoveNet(str(tmp_path / "missing.tflite"))
    with pytest.raises(UserError, match="saved_model.pb"):
        movenet.MoveNet(str(tmp_path))
    (tmp_path / "ref.csv").write_text("keypoint_id,keypoint_x\n0,0.5\n")
    with pytest.raises(UserError, match="columns"):
        movenet.read_reference_keypoints(str(tmp_path / "ref.csv"))


def test_real_movenet_matches_the_publishers_squat_keypoints(assets_dir):
    """PCK@0.1 (torso: left shoulder - right hip) of the int8 Lightning TFLite file on the squat
    photo against the keypoints its publisher computed: at least 0.9."""
    extractor = movenet.MoveNet(os.path.join(assets_dir, "models/movenet/movenet_singlepose_lightning_int8.tflite"))
    assert extractor.kind == "tflite" and extractor.input_size == 192
    image = images.read_image_file(os.path.join(assets_dir, "images/squat_person.jpg"))
    reference = movenet.read_reference_keypoints(os.path.join(assets_dir, "models/movenet/squat_reference_keypoints.csv"))
    ours = extractor(image)
    scale = np.array([image.shape[1], image.shape[0]])
    args = (ours[None, :, :2] * scale, reference[None, :, :2] * scale, np.ones((1, 17), bool))
    torso = (movenet.KEYPOINT["left_shoulder"], movenet.KEYPOINT["right_hip"])
    assert pck(*args, alpha=0.1, normalize="torso", torso_pair=torso) >= 0.9
    assert pck(*args, alpha=0.2, normalize="torso", torso_pair=torso) == 1.0
    assert ours[:, 2].mean() > 0.4  # a confident pose
