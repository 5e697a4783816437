import json
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


class _FakeTPU:
    """Records how get_strategy sets up a TPU it was given by the cluster resolver."""

    calls = []

    def __init__(self, *args, **kwargs):
        _FakeTPU.calls.append(("resolver", args, kwargs))


def test_tpu_is_chosen_through_the_cluster_resolver(monkeypatch):
    resolver = object()
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", lambda: resolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: _FakeTPU.calls.append(("connect", r)))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda r: _FakeTPU.calls.append(("init", r)))
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda r: ("TPUStrategy", r))
    for name in ("tpu", "auto"):
        _FakeTPU.calls.clear()
        assert train.get_strategy(name) == ("TPUStrategy", resolver)
        assert _FakeTPU.calls == [("connect", resolver), ("init", resolver)]  # connected, then initialised


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="needs TF_CONFIG"):
        train.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}')
    with pytest.raises(UserError, match="lists no 'worker'"):
        train.get_strategy("multi_worker")


def test_the_chief_writes_the_run_and_other_workers_their_own_folders(monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for task, expected in (({"type": "worker", "index": 0}, None), ({"type": "worker", "index": 1}, "worker-1")):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert train.non_chief_task() == expected
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["127.0.0.1:3"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert train.non_chief_task() == "worker-0"
    monkeypatch.delenv("TF_CONFIG")
    assert train.non_chief_task() is None


def test_global_batch_and_learning_rate_scale_with_replicas():
    strategy = tf.distribute.get_strategy()
    assert train.global_batch_size(16, strategy) == 16 and train.scaled_learning_rate(1e-3, strategy) == 1e-3

    class FourReplicas:
        num_replicas_in_sync = 4

    assert train.global_batch_size(16, FourReplicas) == 64
    assert train.scaled_learning_rate(1e-3, FourReplicas) == pytest.approx(4e-3)
    model = _model()
    train.compile_classifier(model, 1e-3, FourReplicas)
    assert float(model.optimizer.learning_rate) == pytest.approx(4e-3)


def test_cpu_devices_must_be_a_count_set_before_tensorflow_starts(monkeypatch):
    monkeypatch.setenv(train.CPU_DEVICES_VARIABLE, "two")
    with pytest.raises(UserError, match="whole number"):
        train.split_cpu()
    monkeypatch.setenv(train.CPU_DEVICES_VARIABLE, str(len(tf.config.list_logical_devices("CPU")) + 1))
    with pytest.raises(UserError, match="too late"):  # this test process has started TensorFlow
        train.split_cpu()


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


def _interrupted_stage(tmp_path, monkeypatch, epoch, make_model=_model):
    """A stage of 5 epochs killed when `epoch` begins; -> (data, stage dir)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    stage = str(tmp_path / "stage")
    keras.utils.set_random_seed(0)
    real_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: real_fit(
        self, *a, **{**k, "callbacks": k["callbacks"] + [_FailOnEpoch(epoch)]}))
    with pytest.raises(KeyboardInterrupt):
        train.fit_stage(make_model(), data, data, epochs=5, stage_dir=stage, patience=10)
    monkeypatch.setattr(keras.Model, "fit", real_fit)
    return data, stage


def _resume(data, stage, monkeypatch, make_model=_model):
    """Reruns the stage; -> (the epochs it trained, the model)."""
    epochs_run, real_fit = [], keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: real_fit(
        self, *a, **{**k, "callbacks": k["callbacks"] + [keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: epochs_run.append(epoch))]}))
    model = make_model()
    train.fit_stage(model, data, data, epochs=5, stage_dir=stage, patience=10)
    return epochs_run, model


@pytest.mark.parametrize("patience, kept_epoch", [(10, 0), (None, 4)])
def test_a_stage_keeps_the_best_epoch_or_with_no_patience_the_last(tmp_path, monkeypatch, patience, kept_epoch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), (rng.normal(size=64) > 0).astype("int64")
    x[:, 0] += 2 * y - 1  # learnable, and the validation labels are flipped: val_loss rises every epoch
    train_ds, validation_ds = (tf.data.Dataset.from_tensor_slices((x, labels)).batch(16) for labels in (y, 1 - y))
    weights, real_fit = [], keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: real_fit(
        self, *a, **{**k, "callbacks": [keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: weights.append(self.get_weights()))] + k["callbacks"]}))
    keras.utils.set_random_seed(0)
    model = _model()
    history = train.fit_stage(model, train_ds, validation_ds, epochs=5, stage_dir=str(tmp_path / "stage"),
                              patience=patience)
    assert len(history["val_loss"]) == 5 and int(np.argmin(history["val_loss"])) == 0
    for kept, other in zip(model.get_weights(), weights[kept_epoch]):
        np.testing.assert_array_equal(kept, other)
    assert not np.allclose(weights[0][0], weights[4][0])


def test_an_interrupted_stage_resumes_and_a_finished_one_is_not_retrained(tmp_path, monkeypatch):
    data, stage = _interrupted_stage(tmp_path, monkeypatch, epoch=3)
    assert os.path.isdir(os.path.join(stage, "backup"))

    epochs_run, resumed = _resume(data, stage, monkeypatch)
    assert epochs_run == [3, 4]  # epochs 0-2 were not trained again
    history = train.read_csv_log(os.path.join(stage, "log.csv"))
    assert len(history["loss"]) == 5 and len(history["val_accuracy"]) == 5
    assert not os.path.isdir(os.path.join(stage, "backup"))

    again = _model()
    assert train.fit_stage(again, data, data, epochs=5, stage_dir=stage, patience=10) == history
    epochs_run, reloaded = _resume(data, stage, monkeypatch)
    assert epochs_run == []  # the finished stage was loaded, not retrained
    for a, b, c in zip(again.get_weights(), resumed.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, b)
    assert os.path.isfile(os.path.join(stage, "best.keras"))


def _averaging_model():
    """A model whose optimizer keeps a moving average of its weights (momentum 0.5: it lags a few steps)."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_a_stage_ends_holding_the_moving_average_also_after_a_resume(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    keras.utils.set_random_seed(0)
    model, raw = _averaging_model(), []  # the raw weights after every step, to average by hand
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: raw.append(model.get_weights()))
    real_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: real_fit(
        self, *a, **{**k, "callbacks": k["callbacks"] + [record]}))
    train.fit_stage(model, data, data, epochs=5, stage_dir=str(tmp_path / "straight"), patience=10)
    monkeypatch.setattr(keras.Model, "fit", real_fit)
    average = raw[0]
    for weights in raw[1:]:
        average = [0.5 * a + 0.5 * w for a, w in zip(average, weights)]
    for got, expected, last in zip(model.get_weights(), average, raw[-1]):
        np.testing.assert_allclose(got, expected, atol=1e-6)  # the average, not the best epoch's raw weights
        assert not np.allclose(got, last)

    data, stage = _interrupted_stage(tmp_path, monkeypatch, epoch=2, make_model=_averaging_model)
    epochs_run, resumed = _resume(data, stage, monkeypatch, make_model=_averaging_model)
    assert epochs_run == [2, 3, 4]
    for got, expected in zip(resumed.get_weights(), model.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-6)  # the average went into the backups too
    reloaded = _averaging_model()
    train.fit_stage(reloaded, data, data, epochs=5, stage_dir=stage, patience=10)  # finished: loaded
    for got, expected in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_backups_are_complete_folders_with_checksums_and_two_are_kept(tmp_path, monkeypatch):
    _, stage = _interrupted_stage(tmp_path, monkeypatch, epoch=4)
    backups = sorted(os.listdir(os.path.join(stage, "backup")))
    assert backups == ["epoch-0003", "epoch-0004"]
    with open(os.path.join(stage, "backup", "epoch-0004", "state.json")) as f:
        state = json.load(f)
    assert state["epoch"] == 4 and set(state["sha256"]) >= {"weights.weights.h5", "best_weights.npz"}
    assert state["checkpoint_best"] == pytest.approx(state["early_stopping"]["best"])


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "delete_state"])
def test_a_damaged_newest_backup_falls_back_to_the_previous_one(tmp_path, monkeypatch, capsys, damage):
    data, stage = _interrupted_stage(tmp_path, monkeypatch, epoch=4)
    newest = os.path.join(stage, "backup", "epoch-0004")
    weights = os.path.join(newest, "weights.weights.h5")
    if damage == "truncate":
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) // 2)
    elif damage == "flip_a_byte":  # the file still loads: only the checksum tells
        with open(weights, "r+b") as f:
            f.seek(os.path.getsize(weights) - 64)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        os.remove(os.path.join(newest, "state.json"))
    epochs_run, _ = _resume(data, stage, monkeypatch)
    assert epochs_run == [3, 4]  # resumed after epoch 3, the previous backup
    err = capsys.readouterr().err
    assert "epoch-0004 is unusable" in err and "previous backup is tried" in err
    assert os.path.isdir(os.path.join(stage, "corrupt_backups", "epoch-0004"))  # kept, never trained on


def test_with_every_backup_damaged_the_stage_starts_over_with_a_warning(tmp_path, monkeypatch, capsys):
    data, stage = _interrupted_stage(tmp_path, monkeypatch, epoch=4)
    for name in ("epoch-0003", "epoch-0004"):
        with open(os.path.join(stage, "backup", name, "weights.weights.h5"), "wb") as f:
            f.write(b"not a weights file")
    epochs_run, model = _resume(data, stage, monkeypatch)
    assert epochs_run == [0, 1, 2, 3, 4]
    assert "this stage starts over from its first epoch" in capsys.readouterr().err
    history = train.read_csv_log(os.path.join(stage, "log.csv"))
    assert len(history["loss"]) == 5


def test_a_resumed_stage_does_not_leak_its_start_epoch_into_the_next_fit(tmp_path, monkeypatch):
    data, stage = _interrupted_stage(tmp_path, monkeypatch, epoch=3)
    _, model = _resume(data, stage, monkeypatch)
    assert model._initial_epoch is None  # Keras' BackupAndRestore leaves it set: a 2nd stage would skip epochs
    history = train.fit_stage(model, data, data, epochs=2, stage_dir=str(tmp_path / "next"), patience=10)
    assert len(history["loss"]) == 2


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
