"""Lesson configs: dataclass defaults, YAML files of overrides, dotted `--set` overrides.

Every lesson declares its defaults as nested dataclasses. A YAML file in `configs/` and any
`--set section.key=value` arguments override them, and every value is checked against the
field's type (and `typing.Literal` choices) before a lesson sees it. String values may refer to
environment variables as `${NAME}`, e.g. `${TFCOURSE_ASSETS}/data/plant_apple`.
"""

import dataclasses
import os
import re
import typing

import yaml

from tfcourse import UserError

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value, where):
    """Replaces `${NAME}` in a string by the environment variable NAME; unset is an error."""

    def replace(match):
        name = match.group(1)
        if name not in os.environ:
            raise UserError(
                f"{where} = {value!r} refers to ${{{name}}}, but the environment variable {name} "
                f"is not set. Set it (for the offline assets: export {name}=../shared/assets) "
                "or give the path directly."
            )
        return os.environ[name]

    return _ENV_REFERENCE.sub(replace, value)


def _check_value(value, field_type, where):
    """Returns `value` as `field_type`, or raises UserError saying what was expected."""
    if typing.get_origin(field_type) is typing.Literal:
        choices = typing.get_args(field_type)
        if value not in choices:
            raise UserError(
                f"{where} = {value!r} is not a valid choice; choose one of: "
                + ", ".join(repr(c) for c in choices)
                + "."
            )
        return value
    if field_type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if field_type is str and isinstance(value, str):
        return expand_env(value, where)
    if field_type is tuple and isinstance(value, list):  # YAML has lists only
        return tuple(value)
    if isinstance(value, field_type) and not (field_type is int and isinstance(value, bool)):
        return value
    raise UserError(
        f"{where} = {value!r} has the wrong type: expected {field_type.__name__}, "
        f"got {type(value).__name__}."
    )


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls, data, where="config"):
    """Builds the dataclass `cls` from defaults overridden by the nested dict `data`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of keys to values, got {data!r}.")
    fields = _fields(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(
            f"Unknown config key {where}.{unknown[0]}. Valid keys of {where}: "
            + ", ".join(fields)
            + "."
        )
    values = {}
    for name, value in data.items():
        field_type = fields[name]
        if dataclasses.is_dataclass(field_type):
            values[name] = from_dict(field_type, value, f"{where}.{name}")
        else:
            values[name] = _check_value(value, field_type, f"{where}.{name}")
    config = dataclasses.replace(cls(), **values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def to_dict(config):
    return dataclasses.asdict(config)


def parse_override(text):
    """`a.b.c=value` becomes {"a": {"b": {"c": value}}}; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"--set {text!r} must look like section.key=value, e.g. train.epochs=3.")
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def merge(base, update):
    """Deep-merges dict `update` into a copy of dict `base`."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path):
    if not os.path.isfile(path):
        raise UserError(f"Config file {path!r} does not exist.")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise UserError(f"Config file {path!r} is not valid YAML: {error}") from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"Config file {path!r} must hold a mapping of sections to overrides.")
    return data or {}


def load(cls, path=None, overrides=(), base=None):
    """Defaults of `cls`, then `base` (a dict), then the YAML file, then `--set` overrides."""
    data = base or {}
    if path:
        data = merge(data, read_yaml(path))
    for text in overrides:
        data = merge(data, parse_override(text))
    return from_dict(cls, data)


# Sections shared by the image lessons. A lesson's `Config` composes them.


@dataclasses.dataclass
class ImageDataConfig:
    source: str = "tfds:plant_village"  # a folder of class folders, "tfds:NAME", or "synthetic"
    tfds_data_dir: str = ""  # where TFDS keeps datasets; "" is TFDS's default
    image_size: int = 224
    batch_size: int = 32
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    augment: bool = True
    skip_bad_files: bool = True  # false: an undecodable file stops the run

    def validate(self):
        if self.image_size < 32:
            raise UserError(f"data.image_size = {self.image_size} is too small; use at least 32.")
        if self.batch_size < 1:
            raise UserError(f"data.batch_size = {self.batch_size} must be at least 1.")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise UserError(f"data.{name} = {getattr(self, name)} must be between 0 and 0.5.")


@dataclasses.dataclass
class TrainConfig:
    strategy: typing.Literal["auto", "default", "mirrored", "tpu", "multi_worker"] = "auto"
    mixed_precision: bool = False
    feature_epochs: int = 10  # stage 1: backbone frozen
    feature_learning_rate: float = 1e-3
    fine_tune_epochs: int = 10  # stage 2: top layers unfrozen, batch norm kept in inference mode
    fine_tune_layers: int = 30
    fine_tune_learning_rate: float = 1e-5
    scratch_epochs: int = 20  # the same architecture from random weights, for comparison
    scratch_learning_rate: float = 1e-3
    early_stopping_patience: int = 5

    def validate(self):
        for name in ("feature_epochs", "fine_tune_epochs", "scratch_epochs", "fine_tune_layers"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} = {getattr(self, name)} must not be negative.")
        if self.feature_epochs < 1:
            raise UserError("train.feature_epochs must be at least 1: the head must be trained.")
        for name in ("feature_learning_rate", "fine_tune_learning_rate", "scratch_learning_rate"):
            if not getattr(self, name) > 0:
                raise UserError(f"train.{name} = {getattr(self, name)} must be positive.")


@dataclasses.dataclass
class ExportConfig:
    representative_images: int = 100  # training images that calibrate the int8 model
    max_quantized_accuracy_drop: float = 0.05  # a quantized model losing more is rejected

    def validate(self):
        if self.representative_images < 1:
            raise UserError("export.representative_images must be at least 1.")


@dataclasses.dataclass
class AudioModelConfig:
    weights: str = "hub"  # YAMNet's weights: hub | random | path to a YAMNet .tflite file
    hub_handle: str = ""  # "" is TF Hub's YAMNet; or a local SavedModel folder
    hidden_units: int = 256  # of the head on YAMNet embeddings
    dropout: float = 0.3
