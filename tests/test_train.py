import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError, train


def test_strategy_choice_on_a_machine_without_accelerators():
    assert isinstance(train.get_strategy("default"), type(tf.distribute.get_strategy()))
    assert train.get_strategy("auto").num_replicas_in_sync == 1
    assert isinstance(train.get_strategy("mirrored"), tf.distribute.MirroredStrategy)
    with pytest.raises(UserError, match="no TPU"):
        train.get_strategy("tpu")
    with pytest.raises(UserError, match="auto, default, mirrored"):
        train.get_strategy("gpu")


def _model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    train.compile_classifier(model, 0.01)
    return model


class _FailOnEpoch(keras.callbacks.Callback):
    """Stands in for a killed process: the run dies when `epoch` begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_an_interrupted_stage_resumes_and_a_finished_one_is_not_retrained(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    stage = str(tmp_path / "stage")
    keras.utils.set_random_seed(0)
    first = _model()
    real_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: real_fit(
        self, *a, **{**k, "callbacks": k["callbacks"] + [_FailOnEpoch(3)]}))
    with pytest.raises(KeyboardInterrupt):
        train.fit_stage(first, data, data, epochs=5, stage_dir=stage, patience=10)
    monkeypatch.setattr(keras.Model, "fit", real_fit)
    assert os.path.isdir(os.path.join(stage, "backup"))

    epochs_run = []
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: real_fit(
        self, *a, **{**k, "callbacks": k["callbacks"] + [keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: epochs_run.append(epoch))]}))
    resumed = _model()
    history = train.fit_stage(resumed, data, data, epochs=5, stage_dir=stage, patience=10)
    assert epochs_run == [3, 4]  # epochs 0-2 were not trained again
    assert len(history["loss"]) == 5 and len(history["val_accuracy"]) == 5
    assert not os.path.isdir(os.path.join(stage, "backup"))

    again = _model()
    assert train.fit_stage(again, data, data, epochs=5, stage_dir=stage, patience=10) == history
    assert epochs_run == [3, 4]  # the finished stage was loaded, not retrained
    for a, b in zip(again.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert os.path.isfile(os.path.join(stage, "best.keras"))


def test_mixed_precision_computes_in_float16_and_outputs_float32():
    from tfcourse.models.backbones import build_backbone
    from tfcourse.models.classifier import build_classifier

    train.set_mixed_precision(True)
    try:
        backbone = build_backbone("mobilenet_v2", "random", 32, width_multiplier=0.35)
        model = build_classifier(backbone, 2, 32)
        assert backbone.features.compute_dtype == "float16"
        assert model.predict(np.zeros((1, 32, 32, 3), np.uint8), verbose=0).dtype == np.float32
        assert model.output.dtype == "float32"
    finally:
        train.set_mixed_precision(False)
    assert keras.mixed_precision.global_policy().name == "float32"
