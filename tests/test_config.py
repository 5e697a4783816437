import dataclasses

import pytest

from tfcourse import UserError, config, runs
from tfcourse.lessons import LESSONS, load_lesson
from tfcourse.lessons.crop_disease import Config


def test_defaults_are_the_dataclass_defaults():
    loaded = config.load(Config)
    assert loaded == Config()
    assert loaded.model.backbone == "efficientnet_b0" and loaded.data.source == "tfds:plant_village"


def test_yaml_then_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  feature_epochs: 4\nmodel:\n  backbone: mobilenet_v2\n")
    loaded = config.load(Config, str(path), ["train.feature_epochs=7", "data.validation_fraction=0.25", "data.augment=false"])
    assert loaded.train.feature_epochs == 7
    assert loaded.model.backbone == "mobilenet_v2"
    assert loaded.data.validation_fraction == 0.25
    assert loaded.data.augment is False
    assert loaded.train.scratch_epochs == Config().train.scratch_epochs  # untouched


def test_round_trip_through_dict():
    original = config.load(Config, overrides=["train.fine_tune_layers=5", "model.source=random"])
    assert config.from_dict(Config, config.to_dict(original)) == original


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_every_lessons_config_round_trips_through_a_runs_config_yaml(lesson, tmp_path):
    """A run writes its config to config.yaml (tuples as YAML lists); loading it gives the config back."""
    module = load_lesson(lesson)
    original = config.load(module.Config, base=module.SMOKE)
    runs.prepare_run_dir(str(tmp_path), dataclasses.asdict(original))
    assert config.load(module.Config, str(tmp_path / "config.yaml")) == original


def test_int_is_accepted_for_float():
    assert config.load(Config, overrides=["train.feature_learning_rate=1"]).train.feature_learning_rate == 1.0


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.epochz=3", ["train.epochz", "feature_epochs"]),
        ("nosuch.key=1", ["config.nosuch", "data, model, train, export"]),
        ("train.feature_epochs=three", ["train.feature_epochs", "expected int", "str"]),
        ("data.augment=3", ["data.augment", "expected bool"]),
        ("train.feature_epochs=true", ["expected int", "bool"]),
        ("model.backbone=resnet", ["model.backbone", "'efficientnet_b0'", "'mobilenet_v2'"]),
        ("train.strategy=gpu", ["train.strategy", "'mirrored'"]),
        ("data.test_fraction=0.7", ["data.test_fraction", "between 0 and 0.5"]),
        ("train.feature_epochs=0", ["feature_epochs", "at least 1"]),
        ("noequals", ["section.key=value"]),
    ],
)
def test_bad_overrides_name_the_key_and_the_choices(override, words):
    with pytest.raises(UserError) as error:
        config.load(Config, overrides=[override])
    for word in words:
        assert word in str(error.value)


def test_environment_references(monkeypatch):
    monkeypatch.setenv("TFCOURSE_ASSETS", "/some/assets")
    loaded = config.load(Config, overrides=["data.source=${TFCOURSE_ASSETS}/data/plant_apple"])
    assert loaded.data.source == "/some/assets/data/plant_apple"
    monkeypatch.delenv("TFCOURSE_ASSETS")
    with pytest.raises(UserError, match=r"TFCOURSE_ASSETS.*not set"):
        config.load(Config, overrides=["data.source=${TFCOURSE_ASSETS}/x"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        config.load(Config, str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="mapping"):
        config.load(Config, str(bad))


def test_shipped_configs_are_valid(monkeypatch):
    monkeypatch.setenv("TFCOURSE_ASSETS", "/assets")
    loaded = config.load(Config, "configs/crop-disease-assets.yaml")
    assert loaded.model.source.endswith("mobilenet_v2_1.0_224_quant.tflite")
    assert dataclasses.asdict(loaded)["data"]["source"] == "/assets/data/plant_apple"
