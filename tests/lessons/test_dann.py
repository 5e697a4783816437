import json
import os

import keras
import numpy as np
import pytest

from tfcourse import UserError, config
from tfcourse.data import mnist_m
from tfcourse.lessons import dann


def test_smoke_run_writes_report_table_plots_and_checked_exports(tmp_path):
    smoke = config.load(dann.Config, base=dann.SMOKE)
    report = dann.run(smoke, str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "dann"
    for name in ("training_curves.png", "domain_curves.png", "features_pca.png", "examples.png",
                 "confusion_matrix.png", "checkpoints/mnist_m.npz", "export/saved_model/saved_model.pb",
                 "export/model_float32.tflite", "export/model_int8.tflite", "export/labels.txt"):
        assert os.path.exists(tmp_path / name), name
    assert set(report["metrics"]) == {"source_only", "dann", "target_trained"}
    assert "synthetic" in report["note"] and report["data"]["synthetic"]
    sizes = report["data"]["split_sizes"]
    assert sum(n for splits in sizes.values() for n in splits.values()) == 600
    for result in report["metrics"].values():
        assert result["target"]["num_examples"] == sizes["target"]["test"]
        assert 0 <= result["domain_accuracy"] <= 1
    # λ: held at 0 for the baselines; DANN ends at the schedule's last value, λ(1) ≈ 0.9999
    assert report["metrics"]["source_only"]["lambda_at_end"] == 0.0
    assert report["metrics"]["dann"]["lambda_at_end"] == pytest.approx(0.9999, abs=1e-4)
    assert report["lambda_schedule"][0][1] == 0.0
    assert report["export"]["float32"]["max_abs_diff"] <= 1e-4
    summary = (tmp_path / "summary.md").read_text()
    for row in ("| source-only (ours)", "| DANN (ours)", "| target-trained (ceiling) (ours)",
                "| source-only (paper, quoted) | 0.5225", "| DANN (paper, quoted) | 0.7666"):
        assert row in summary, row


def _tiny_domains(n=40, seed=0):
    rng = np.random.default_rng(seed)
    def split(domain_value):
        return {s: (np.full((n, 28, 28, 3), domain_value, np.uint8), rng.integers(0, 3, n)) for s in ("train", "validation", "test")}
    return {"source": split(0), "target": split(200)}


def test_mixed_batches_are_half_source_half_target_with_masked_labels():
    domains = _tiny_domains()
    batch = next(iter(dann.mixed_batches(domains, "train", "source", 8, seed=0, repeat=True)))
    images, targets, weights = batch
    assert images.shape == (8, 28, 28, 3)
    np.testing.assert_array_equal(targets["domain"].numpy(), [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(images.numpy()[:4].max(axis=(1, 2, 3)), 0)  # source first
    np.testing.assert_array_equal(weights["label"].numpy(), [2, 2, 2, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(weights["domain"].numpy(), np.ones(8))
    _, _, target_weights = next(iter(dann.mixed_batches(domains, "train", "target", 8, seed=0, repeat=True)))
    np.testing.assert_array_equal(target_weights["label"].numpy(), [0, 0, 0, 0, 2, 2, 2, 2])
    finite = list(dann.mixed_batches(domains, "test", "target", 8, seed=0, repeat=False))
    assert sum(len(b[0]) for b in finite) == 80  # every held-out example once


def test_dann_model_round_trips_and_exports_only_the_label_branch(tmp_path):
    model = dann.build_dann(3, dann.ModelConfig(conv_filters=4, label_units=8, domain_units=8))
    model.get_layer("gradient_reversal").strength.assign(0.3)
    path = str(tmp_path / "dann.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 3)).astype(np.uint8)
    for key in ("label", "domain"):
        np.testing.assert_allclose(reloaded.predict(x, verbose=0)[key], model.predict(x, verbose=0)[key], atol=1e-6)
    assert float(reloaded.get_layer("gradient_reversal").strength.numpy()) == pytest.approx(0.3)
    classifier = dann.label_classifier(model)
    assert classifier.output.shape == (None, 3)
    assert not any(layer.name.startswith(("gradient_reversal", "domain")) for layer in classifier.layers)
    assert dann.feature_extractor(model).output.shape == (None, 4 * 4 * 6)


def test_pca_finds_the_direction_of_largest_variance():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 5)) * [10, 1, 0.1, 0.1, 0.1]
    projected = dann.pca_2d(points)
    assert projected.shape == (200, 2)
    assert abs(np.corrcoef(projected[:, 0], points[:, 0])[0, 1]) > 0.99


def test_bad_config_values_are_named():
    with pytest.raises(UserError, match="data.batch_size"):
        config.load(dann.Config, overrides=["data.batch_size=7"])
    with pytest.raises(UserError, match="data.target_fraction"):
        config.load(dann.Config, overrides=["data.target_fraction=1.5"])
    with pytest.raises(UserError, match="does not exist"):
        mnist_m.load_photos("/nonexistent/photos", seed=0)


def test_assets_config_builds_disjoint_domains_with_separate_test_photos(assets_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFCOURSE_ASSETS", assets_dir)
    cfg = config.load(dann.Config, "configs/dann-assets.yaml", ["data.max_digits=400"])
    domains, class_names, summary = dann.build_domains(cfg.data, str(tmp_path / "mnist_m.npz"))
    assert class_names == [str(i) for i in range(10)] and summary["photos"] == {"train": 80, "test": 20}
    assert sum(n for splits in summary["split_sizes"].values() for n in splits.values()) == 400
    assert domains["target"]["test"][0].shape[1:] == (28, 28, 3)
    # the cached MNIST-M is reused as built
    again, _, _ = dann.build_domains(cfg.data, str(tmp_path / "mnist_m.npz"))
    np.testing.assert_array_equal(again["target"]["train"][0], domains["target"]["train"][0])
