import json
import os

import keras
import numpy as np
import pytest

from tfcourse import UserError, explain
from tfcourse.lessons.interpret import small_cnn_backbone
from tfcourse.models.backbones import build_backbone
from tfcourse.models.classifier import build_classifier


def single_pixel_model(size=8, pixel=(3, 5), channel=1):
    """uint8 images -> softmax over 2 classes whose logits depend on one pixel only."""
    images = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(images))
    dense = keras.layers.Dense(2, activation="softmax", name="probabilities")
    outputs = dense(x)
    kernel = np.zeros((size * size * 3, 2), np.float32)
    kernel[(pixel[0] * size + pixel[1]) * 3 + channel] = [3.0, -3.0]
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    return keras.Model(images, outputs)


def random_images(count, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3)).astype(np.uint8)


def test_all_gradient_falls_on_the_one_pixel_the_output_depends_on():
    maps = explain.vanilla_gradients(single_pixel_model(), random_images(4, 8))
    assert maps.shape == (4, 8, 8)
    assert np.all(maps[:, 3, 5] > 0)
    maps[:, 3, 5] = 0
    assert np.all(maps == 0)


def test_the_score_is_the_logit_of_a_softmax_output():
    model, images = single_pixel_model(), random_images(4, 8)
    logits = np.asarray(explain.explanation_model(model)(images.astype("float32")))
    assert np.allclose(keras.ops.softmax(logits).numpy(), model(images), atol=1e-6)
    # d logit / d pixel is the kernel weight over 255, even where the probability saturates
    assert np.allclose(explain.vanilla_gradients(model, images, [0] * 4)[:, 3, 5], 3 / 255, rtol=1e-5)


def test_smoothgrad_without_noise_is_the_vanilla_gradient():
    model = build_classifier(small_cnn_backbone(16), 3, 16, backbone_in_inference_mode=False)
    images = random_images(3, 16)
    smooth = explain.smoothgrad(model, images, samples=3, noise=0.0)
    assert np.allclose(smooth, explain.vanilla_gradients(model, images), rtol=1e-5, atol=1e-12)
    assert not np.allclose(explain.smoothgrad(model, images, samples=3, noise=0.2), smooth)
    with pytest.raises(UserError, match="SmoothGrad"):
        explain.smoothgrad(model, images, samples=0)


def test_grad_cam_finds_the_feature_map_inside_a_nested_backbone():
    # The crop-disease classifier: uint8 -> Rescaling -> nested MobileNetV2 (pooling="avg") -> Dense
    backbone = build_backbone("mobilenet_v2", "random", 64, width_multiplier=0.35)
    model = build_classifier(backbone, 3, 64)
    assert explain.default_feature_layer(model) == ("mobilenetv2_0.35_64", "out_relu")
    images = random_images(2, 64)
    assert explain.grad_cam(model, images, upsample=False).shape == (2, 2, 2)  # out_relu is 2x2 at 64 px
    assert explain.grad_cam(model, images).shape == (2, 64, 64)
    coarse = explain.grad_cam(model, images, layer="block_6_expand_relu", upsample=False)
    assert coarse.shape == (2, 8, 8) and np.all(coarse >= 0)
    activations = explain.layer_activations(model, images, ["block_1_expand_relu", "mobilenetv2_0.35_64/out_relu"])
    assert activations["mobilenetv2_0.35_64/block_1_expand_relu"].shape == (2, 32, 32, 48)
    assert activations["mobilenetv2_0.35_64/out_relu"].shape == (2, 2, 2, 1280)


def test_grad_cam_matches_its_definition():
    model = build_classifier(small_cnn_backbone(16), 2, 16, backbone_in_inference_mode=False)
    images = random_images(2, 16, seed=3)
    tapped = explain.explanation_model(model, [("small_cnn", "conv3")])
    import tensorflow as tf

    x = tf.constant(images, tf.float32)
    with tf.GradientTape() as tape:
        features, logits = tapped(x)
        score = tf.reduce_sum(logits[:, 1])
    gradients = tape.gradient(score, features).numpy()
    expected = np.maximum((gradients.mean(axis=(1, 2), keepdims=True) * features.numpy()).sum(-1), 0)
    assert np.allclose(explain.grad_cam(model, images, [1, 1], "conv3", upsample=False), expected, rtol=1e-5, atol=1e-7)


def test_opaque_backbones_and_unknown_layers_are_reported():
    images = keras.Input((8, 8, 3))
    flat = keras.Model(images, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(images)))
    with pytest.raises(UserError, match="no 4-D convolutional feature map"):
        explain.grad_cam(flat, random_images(1, 8))
    model = build_classifier(small_cnn_backbone(16), 2, 16)
    with pytest.raises(UserError, match="small_cnn/conv3"):
        explain.resolve_layer(model, "conv9")
    with pytest.raises(UserError, match="Unknown explanation method"):
        explain.saliency_maps(model, random_images(1, 16), ["occlusion"])


def test_mass_inside_box():
    maps = np.zeros((2, 10, 10))
    maps[0, 2:4, 2:4] = 1
    maps[0, 9, 9] = -4  # absolute values count
    maps[1, 0, 0] = 1
    assert np.allclose(explain.mass_inside_box(maps, [(2, 2, 4, 4), (1, 1, 3, 3)]), [0.5, 0.0])


def write_crop_disease_like_run(run_dir, variant="fine_tuned"):
    backbone = build_backbone("mobilenet_v2", "random", 32, width_multiplier=0.35)
    model = build_classifier(backbone, 3, 32)
    os.makedirs(os.path.join(run_dir, "checkpoints", variant))
    os.makedirs(os.path.join(run_dir, "export"))
    model.save(os.path.join(run_dir, "checkpoints", variant, "best.keras"))
    with open(os.path.join(run_dir, "export", "labels.txt"), "w") as f:
        f.write("scab\nrot\nhealthy\n")
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump({"lesson": "crop-disease", "exported_variant": variant}, f)
    return model


def test_explain_files_on_an_image_lesson_run(tmp_path):
    run_dir = str(tmp_path / "run")
    model = write_crop_disease_like_run(run_dir)
    run = explain.load_run(run_dir)
    images = random_images(2, 32)
    assert np.allclose(run.model(images), model(images), atol=1e-6)
    assert run.class_names == ["scab", "rot", "healthy"] and run.lesson == "crop-disease"
    folder = tmp_path / "images"
    folder.mkdir()
    keras.utils.save_img(str(folder / "leaf.png"), random_images(1, 50)[0])
    (folder / "broken.jpg").write_bytes(b"not an image")
    summary = explain.explain_files(run_dir, [str(folder)], str(tmp_path / "out"), ["vanilla", "gradcam"],
                                    layers=["block_2_add"])
    assert summary["num_skipped"] == 1 and summary["skipped"][0]["path"].endswith("broken.jpg")
    assert "Unknown image file format" in summary["skipped"][0]["reason"]
    assert summary["gradcam_layer"] == "mobilenetv2_0.35_32/out_relu"
    [result] = summary["images"]
    assert result["predicted"] in run.class_names and len(result["pngs"]) == 3
    assert all(os.path.getsize(p) > 1000 for p in result["pngs"])


def test_runs_without_a_keras_model_are_refused(tmp_path):
    with pytest.raises(UserError, match="report.json is missing"):
        explain.load_run(str(tmp_path))
    (tmp_path / "report.json").write_text(json.dumps({"lesson": "crop-disease", "exported_variant": "frozen"}))
    with pytest.raises(UserError, match="checkpoints/frozen/best.keras is missing"):
        explain.load_run(str(tmp_path))
    (tmp_path / "report.json").write_text(json.dumps({"lesson": "x"}))
    with pytest.raises(UserError, match="0 checkpoints"):
        explain.load_run(str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        explain.image_files([str(tmp_path / "missing.png")])
