import gzip
import json
import os

import keras
import numpy as np
import pytest

from tfcourse import UserError, config
from tfcourse.lessons import small_images


def test_smoke_run_reports_three_arms_and_exports_a_model_taking_the_raw_28px_image(tmp_path):
    smoke = config.load(small_images.Config, base=small_images.SMOKE, overrides=["train.feature_epochs=2"])
    report = small_images.run(smoke, str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "small-images"
    for name in ("summary.md", "training_curves.png", "confusion_matrix.png", "examples.png",
                 "export/saved_model/saved_model.pb", "export/model_float32.tflite", "export/model_int8.tflite"):
        assert os.path.exists(tmp_path / name), name
    assert report["backbone"]["pretrained"] is False and "randomly initialised" in report["note"]
    assert "generated" in report["note"]
    assert report["data"]["split_sizes"] == {"train": 96, "validation": 48, "test": 48}
    assert report["data"]["per_split_per_class"]["train"] == {"ring": 24, "square": 24, "plus": 24, "bar": 24}
    assert set(report["arms"]) == {"upsampled", "native", "scratch"} and "padded to 32" in report["arms"]["native"]
    assert set(report["metrics"]) == {"upsampled", "upsampled_fine_tuned", "native", "native_fine_tuned", "scratch"}
    for name, result in report["metrics"].items():
        assert result["test"]["num_examples"] == 48 and 0 <= result["test"]["macro_f1"] <= 1
        assert report["models"][name]["seconds_per_epoch"] > 0
    models = report["models"]
    assert models["upsampled"]["parameters"] == models["native"]["parameters"]  # the same backbone and head
    assert models["upsampled"]["trainable_parameters"] == 1280 * 4 + 4  # frozen: the head only
    assert models["upsampled_fine_tuned"]["trainable_parameters"] > models["upsampled"]["trainable_parameters"]
    assert report["metrics"]["scratch"]["validation"]["accuracy"] > 0.4  # learns (chance is 0.25)
    assert set(report["best_per_arm"]) == {"upsampled", "native", "scratch"}
    assert report["best_per_arm"]["native"] in ("native", "native_fine_tuned")
    best = report["exported_variant"]
    assert report["metrics"][best]["validation"]["accuracy"] == max(r["validation"]["accuracy"]
                                                                      for r in report["metrics"].values())
    assert report["export"]["tflite_input"] == {"shape": [1, 28, 28, 1], "dtype": "uint8"}
    assert report["export"]["float32"]["max_abs_diff"] <= 1e-4
    assert report["export"]["keras"]["accuracy"] == pytest.approx(report["metrics"][best]["test"]["accuracy"])
    summary = (tmp_path / "summary.md").read_text()
    assert "| scratch |" in summary and "uint8 [1, 28, 28, 1]" in summary


def test_stratified_slices_have_exact_sizes_and_class_proportions():
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    picked = small_images.take(labels, {"train": 50, "validation": 100, "test": 300}, seed=3, what="x")
    assert {k: len(v) for k, v in picked.items()} == {"train": 50, "validation": 100, "test": 300}
    everything = np.concatenate(list(picked.values()))
    assert len(set(everything)) == len(everything)  # disjoint
    for name, size in (("train", 50), ("validation", 100), ("test", 300)):
        np.testing.assert_allclose(np.bincount(labels[picked[name]], minlength=4), size * np.array([.1, .2, .3, .4]),
                                   atol=1)
    again = small_images.take(labels, {"train": 50, "validation": 100, "test": 300}, seed=3, what="x")
    assert all(np.array_equal(picked[k], again[k]) for k in picked)
    other = small_images.take(labels, {"train": 50, "validation": 100, "test": 300}, seed=4, what="x")
    assert not np.array_equal(picked["train"], other["train"])
    with pytest.raises(UserError, match="holds 1000 images, fewer than the 1001"):
        small_images.take(labels, {"train": 1000, "test": 1}, seed=0, what="x")


def _write_idx(folder, images, labels):
    os.makedirs(folder, exist_ok=True)
    header = bytes([0, 0, 8, 3]) + np.array(images.shape, ">u4").tobytes()
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(header + images.tobytes())
    with gzip.open(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([len(labels)], ">u4").tobytes() + labels.astype(np.uint8).tobytes())


def test_an_idx_folder_is_cut_three_ways_with_a_channel_axis(tmp_path):
    rng = np.random.default_rng(0)
    digits, labels = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), np.arange(60) % 3
    _write_idx(tmp_path / "mnist", digits, labels)
    data = config.from_dict(small_images.DataConfig, {"source": str(tmp_path / "mnist"), "train_size": 30,
                                                      "validation_size": 12, "test_size": 18})
    arrays, class_names, summary = small_images.load_splits(data)
    assert class_names == ["0", "1", "2"] and summary["pool_sizes"] == {"all": 60}
    assert summary["per_split_per_class"]["validation"] == {"0": 4, "1": 4, "2": 4}
    for split, (x, y) in arrays.items():
        assert x.shape[1:] == (28, 28, 1) and x.dtype == np.uint8
        for image, label in zip(x, y):  # each image keeps its own label
            match = np.flatnonzero((digits == image[..., 0]).all(axis=(1, 2)))
            assert labels[match[0]] == label


def test_tfds_source_takes_train_and_validation_from_train_and_test_from_test(tmp_path):
    """A prepared local copy of TFDS cifar10 (its own features and version, 30 images per split) is
    read through the real `tfds.load` path."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    info = tfds.builder("cifar10", data_dir=str(tmp_path)).info
    rng = np.random.default_rng(0)
    split = lambda: tf.data.Dataset.from_tensor_slices({
        "id": [f"img_{i}" for i in range(30)], "label": np.arange(30) % 10,
        "image": rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="cifar10", version=str(info.version), features=info.features, data_dir=str(tmp_path),
        split_datasets={"train": split(), "test": split()})
    data = config.from_dict(small_images.DataConfig, {"train_size": 12, "validation_size": 6, "test_size": 8,
                                                      "tfds_data_dir": str(tmp_path)})
    assert data.source == "tfds:cifar10"
    arrays, class_names, summary = small_images.load_splits(data)
    assert summary["pool_sizes"] == {"train": 30, "test": 30} and len(class_names) == 10
    assert {split: x.shape for split, (x, _) in arrays.items()} == {
        "train": (12, 32, 32, 3), "validation": (6, 32, 32, 3), "test": (8, 32, 32, 3)}
    assert small_images.native_backbone_size(summary["input_shape"]) == 32  # CIFAR-10 goes in unpadded


def test_synthetic_shapes_are_balanced_grey_images():
    pixels, labels = small_images.synthetic_images(5, seed=1)
    assert pixels.shape == (20, 28, 28, 1) and pixels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [5, 5, 5, 5]
    assert pixels.max() >= 150 and pixels.min() < 60  # a bright shape over a dark background


def test_small_cnn_takes_uint8_and_reloads(tmp_path):
    model = small_images.build_small_cnn((28, 28, 1), 4, filters=4)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (3, 4) and model.input.dtype == "uint8"
    np.testing.assert_allclose(probabilities.sum(-1), 1, rtol=1e-5)
    model.save(tmp_path / "cnn.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "cnn.keras").predict(images, verbose=0),
                               probabilities, atol=1e-6)


def test_config_round_trip_and_bad_values():
    cfg = config.load(small_images.Config, base=small_images.SMOKE)
    assert config.from_dict(small_images.Config, config.to_dict(cfg)) == cfg
    with pytest.raises(UserError, match="model.upsampled_size"):
        config.load(small_images.Config, overrides=["model.upsampled_size=16"])
    with pytest.raises(UserError, match="data.train_size"):
        config.load(small_images.Config, overrides=["data.train_size=0"])


def test_assets_config_uses_real_mnist_and_the_imported_imagenet_backbone(assets_dir, monkeypatch):
    monkeypatch.setenv("TFCOURSE_ASSETS", assets_dir)
    cfg = config.load(small_images.Config, "configs/small-images-assets.yaml")
    arrays, class_names, summary = small_images.load_splits(cfg.data)
    assert summary["pool_sizes"] == {"all": 10000} and class_names == [str(d) for d in range(10)]
    assert summary["split_sizes"] == {"train": 1000, "validation": 1000, "test": 4000}
    assert all(abs(n - 100) <= 15 for n in summary["per_split_per_class"]["train"].values())  # ~MNIST's class mix
    model, backbone = small_images.make_backbone_classifier(cfg, (28, 28, 1), 10, 32, "pad", cfg.model.source)
    assert backbone.pretrained and backbone.source.startswith("tflite:")
    assert model.get_layer("adapter").output.shape[1:] == (32, 32, 3)
    assert model.predict(arrays["test"][0][:4], verbose=0).shape == (4, 10)
