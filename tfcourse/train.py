"""Training: the tf.distribute strategy, the callbacks every lesson uses, and resumable stages.

Scaling out. `data.batch_size` is the batch of ONE replica: the global batch is
`batch_size x replicas` (`global_batch_size`), and learning rates, which are set for one replica,
are multiplied by the number of replicas (`scaled_learning_rate`, the linear scaling rule of Goyal
et al. 2017), so a step on N replicas takes the step N single-replica steps would take.
"""

import contextlib
import csv
import glob
import hashlib
import json
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
CPU_DEVICES_VARIABLE = "TFCOURSE_CPU_DEVICES"


def get_strategy(name="auto"):
    """The tf.distribute strategy `train.strategy` names.

    - auto: a TPU if the cluster resolver finds one, MirroredStrategy on more than one GPU, else default;
    - mirrored: MirroredStrategy over the GPUs, or over the logical CPUs where there is no GPU
      (`TFCOURSE_CPU_DEVICES=2` splits the CPU in two, to try it on a laptop);
    - multi_worker: MultiWorkerMirroredStrategy over the workers TF_CONFIG lists;
    - tpu: TPUStrategy through the TPU cluster resolver (Colab, Cloud TPU).
    """
    if name not in STRATEGIES:
        raise UserError(f"train.strategy {name!r} is unknown; choose one of: {', '.join(STRATEGIES)}.")
    split_cpu()
    if name in ("auto", "tpu"):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            if name == "tpu":
                raise UserError(f"train.strategy 'tpu': no TPU was found ({error}).") from None
    if name == "multi_worker":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def split_cpu():
    """Splits the CPU into $TFCOURSE_CPU_DEVICES logical devices (before TensorFlow starts)."""
    value = os.environ.get(CPU_DEVICES_VARIABLE, "")
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{CPU_DEVICES_VARIABLE}={value!r} must be a whole number of CPU devices, 1 or more.")
    wanted = int(value)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
    except RuntimeError:  # TensorFlow has started: fine if the CPU is already split so
        if len(tf.config.list_logical_devices("CPU")) != wanted:
            raise UserError(f"{CPU_DEVICES_VARIABLE}={value} came too late: TensorFlow had already started. "
                            "Set it in the environment of the command.") from None


def _tf_config():
    """TF_CONFIG as a dict with a "cluster" dict, or None where it is unset or not such JSON."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG", ""))
    except ValueError:
        return None
    return tf_config if isinstance(tf_config, dict) and isinstance(tf_config.get("cluster"), dict) else None


def _check_tf_config():
    tf_config = _tf_config()
    if tf_config is None:
        raise UserError("train.strategy 'multi_worker' needs TF_CONFIG: a JSON object with 'cluster' (the workers' "
                        "host:port) and 'task' (this process's type and index); see the README.")
    if not tf_config["cluster"].get("worker"):
        raise UserError(f"TF_CONFIG's cluster {tf_config['cluster']} lists no 'worker'.")


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def model_scope(strategy):
    """Where lessons build and compile their models: the strategy's scope.

    Under multi-worker the lesson's model stays local: Keras 3 `predict` on a model built in
    MultiWorkerMirroredStrategy's scope gathers every worker's outputs and `evaluate` fails, so
    `fit_stage` trains a copy built in the scope and copies its weights back.
    """
    return contextlib.nullcontext() if is_multi_worker(strategy) else strategy.scope()


def global_batch_size(per_replica_batch_size, strategy):
    return per_replica_batch_size * strategy.num_replicas_in_sync


def scaled_learning_rate(learning_rate, strategy):
    """A learning rate set for one replica, for `strategy`'s global batch (the linear scaling rule)."""
    return learning_rate * strategy.num_replicas_in_sync


def describe_strategy(strategy, per_replica_batch_size):
    """The report's record of how a run was distributed."""
    return {
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "per_replica_batch_size": per_replica_batch_size,
        "global_batch_size": global_batch_size(per_replica_batch_size, strategy),
        "learning_rate_multiplier": scaled_learning_rate(1, strategy),
    }


def non_chief_task():
    """"worker-N" in a non-chief process of a multi-worker cluster (TF_CONFIG), else None.

    The chief is the "chief" task, or worker 0 where there is none; only it writes the run directory.
    """
    tf_config = _tf_config()
    try:
        task_type, index = tf_config["task"]["type"], int(tf_config["task"].get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    has_chief = "chief" in tf_config["cluster"]
    if task_type == "chief" or (task_type == "worker" and index == 0 and not has_chief):
        return None
    return f"{task_type}-{index}"


def set_trainable(layer, trainable):
    """`layer.trainable = trainable` for the layer and every layer in it, also where a flag already
    reads `trainable`. On Keras 3.15's TensorFlow backend that assignment is skipped when the flag
    holds the value (KerasAutoTrackable short-cuts `self.x = self.x`), also in the setter's own walk
    through the sublayers; and a model reloaded from `.keras` brings a frozen sub-model back with its
    flags False but its KerasHub layers' weights trainable: DreamBooth fine-tuned a base run's text
    encoder that it was told to keep frozen."""
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):  # Keras has no public walk
        keras.layers.Layer.trainable.fset(sublayer, trainable)


def set_mixed_precision(enabled):
    keras.mixed_precision.set_global_policy("mixed_float16" if enabled else "float32")


def fit_stage(model, train_ds, validation_ds, epochs, stage_dir, patience, strategy=None):
    """Trains one stage, resumably; returns its history {metric: [per epoch]}.

    - `ResumableBackup`: rerunning an interrupted command continues after the last finished epoch.
    - A finished stage leaves `final.weights.h5` and `history.json`; a rerun loads them instead
      of training again, so a run interrupted in a later stage resumes there.
    - `best.keras` is the best checkpoint by validation loss; early stopping restores it. With
      `patience=None` every epoch runs and the model keeps the last epoch's weights (a fixed
      training budget, as in DreamBooth).
    - `log.csv` is the per-epoch log.
    - An optimizer with `use_ema` leaves the model holding the moving average of its weights (`final.weights.h5` too).
    - Under multi-worker (`strategy`), `fit_multi_worker` runs the epochs instead of `model.fit`.
    """
    final_weights = os.path.join(stage_dir, "final.weights.h5")
    history_path = os.path.join(stage_dir, "history.json")
    if os.path.isfile(final_weights) and os.path.isfile(history_path):
        model.load_weights(final_weights)
        with open(history_path) as f:
            return json.load(f)
    os.makedirs(stage_dir, exist_ok=True)
    checkpoint = keras.callbacks.ModelCheckpoint(os.path.join(stage_dir, "best.keras"), monitor="val_loss",
                                                 save_best_only=True)
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=epochs if patience is None else patience,
                                                   restore_best_weights=patience is not None)
    callbacks = [
        checkpoint, early_stopping, keras.callbacks.CSVLogger(os.path.join(stage_dir, "log.csv"), append=True),
        # last: on a resume it restores the state the callbacks above have just reset
        ResumableBackup(os.path.join(stage_dir, "backup"), early_stopping, checkpoint),
    ]
    if is_multi_worker(strategy):
        fit_multi_worker(model, strategy, train_ds, validation_ds, epochs, callbacks)
    else:
        if not model.optimizer.built:
            # Outside a strategy's scope Keras builds the optimizer inside the first traced train step, and
            # the variables that creates make tf.function trace the step again: 32 s instead of 15 s for
            # the tiny diffusion UNet's first step
            model.optimizer.build(model.trainable_variables)
        # shuffle=False: the tf.data pipeline shuffles (Keras ignores the flag for datasets, with a warning)
        model.fit(train_ds, validation_data=validation_ds, epochs=epochs, callbacks=callbacks, verbose=2, shuffle=False)
        use_moving_average(model)
    history = read_csv_log(os.path.join(stage_dir, "log.csv"))  # all epochs, also across a resume
    write_atomically(final_weights, model.save_weights)
    write_atomically(history_path, lambda path: _dump_json(history, path))  # last: it marks the stage finished
    shutil.rmtree(os.path.join(stage_dir, "backup"), ignore_errors=True)
    return history


def use_moving_average(model):
    """Where the optimizer keeps an exponential moving average of the weights (`use_ema`), put it
    into the model. Keras' `fit` does so before the callbacks' end, and EarlyStopping(restore_best_weights)
    then puts the best epoch's raw weights back; the average is what a diffusion model samples with."""
    if getattr(model.optimizer, "use_ema", False):
        model.optimizer.finalize_variable_values(model.trainable_variables)


def _dump_json(data, path):
    with open(path, "w") as f:
        json.dump(data, f)


def write_atomically(path, write):
    """`write(tmp)`, then the finished file replaces `path`: a kill never leaves it half-written."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, "tmp-" + name)  # keeps the name's ending: Keras checks it
    write(tmp)
    os.replace(tmp, path)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def warn(message):
    print(f"tfcourse: warning: {message}", file=sys.stderr, flush=True)


class ResumableBackup(keras.callbacks.Callback):
    """Backs up the training state after every epoch; a rerun resumes from the newest backup that verifies.

    Written here because keras.callbacks.BackupAndRestore (Keras 3.15) writes its files in place (a kill
    mid-write leaves a truncated backup, and weights newer than the epoch it records), falls back only
    on an OSError (a damaged file that still loads would be trained on), loses EarlyStopping's and
    ModelCheckpoint's state, and leaves `model._initial_epoch` set for the model's next `fit`.

    Each backup is a folder `epoch-NNNN` (weights with the optimizer state, the early-stopping best
    weights, and `state.json` with their SHA-256 sums), written under a temporary name and renamed
    when complete; the two newest are kept. A backup that fails to verify or load is moved to
    `corrupt_backups/` with a warning, and the previous one is tried; with none left the stage starts over.
    """

    KEEP = 2

    def __init__(self, backup_dir, early_stopping, checkpoint):
        super().__init__()
        self.backup_dir = backup_dir
        self.early_stopping = early_stopping
        self.checkpoint = checkpoint

    def backups(self):
        """Backup folders, newest first."""
        return sorted(glob.glob(os.path.join(self.backup_dir, "epoch-[0-9][0-9][0-9][0-9]")), reverse=True)

    def on_train_begin(self, logs=None):
        self.model._initial_epoch = None
        backups = self.backups()
        if not backups:
            return
        before = [v.numpy() for v in self.model.variables + self.model.optimizer.variables]
        for path in backups:
            try:
                epoch = self._restore(path)
            except (OSError, ValueError, KeyError) as error:
                kept = os.path.join(os.path.dirname(self.backup_dir), "corrupt_backups", os.path.basename(path))
                warn(f"the backup {path} is unusable ({str(error).splitlines()[0]}); it is moved to {kept}"
                     + (" and the previous backup is tried." if path != backups[-1] else "."))
                shutil.rmtree(kept, ignore_errors=True)
                os.renames(path, kept)
                for variable, value in zip(self.model.variables + self.model.optimizer.variables, before):
                    variable.assign(value)
                continue
            print(f"Resuming from the backup of epoch {epoch} ({path}).", flush=True)
            self.model._initial_epoch = epoch  # Keras' fit starts there (BackupAndRestore's mechanism)
            return
        warn(f"no usable backup in {self.backup_dir}: this stage starts over from its first epoch.")

    def _restore(self, path):
        with open(os.path.join(path, "state.json")) as f:
            state = json.load(f)
        for name, digest in state["sha256"].items():
            if _sha256(os.path.join(path, name)) != digest:
                raise ValueError(f"{name} does not match its SHA-256 sum")
        self.model.load_weights(os.path.join(path, "weights.weights.h5"))
        stopping = state["early_stopping"]
        self.early_stopping.wait, self.early_stopping.best = stopping["wait"], stopping["best"]
        self.early_stopping.best_epoch = stopping["best_epoch"]
        if "best_weights.npz" in state["sha256"]:
            with np.load(os.path.join(path, "best_weights.npz")) as best:
                self.early_stopping.best_weights = [best[f"arr_{i}"] for i in range(len(best.files))]
        self.checkpoint.best = state["checkpoint_best"]
        return state["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        final = os.path.join(self.backup_dir, f"epoch-{epoch + 1:04d}")
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self.model.save_weights(os.path.join(tmp, "weights.weights.h5"))
        if self.early_stopping.best_weights is not None:
            np.savez(os.path.join(tmp, "best_weights.npz"), *self.early_stopping.best_weights)
        state = {
            "epoch": epoch + 1,
            "sha256": {name: _sha256(os.path.join(tmp, name)) for name in os.listdir(tmp)},
            "early_stopping": {"wait": self.early_stopping.wait, "best_epoch": self.early_stopping.best_epoch,
                               "best": _plain(self.early_stopping.best)},
            "checkpoint_best": _plain(self.checkpoint.best),
        }
        _dump_json(state, os.path.join(tmp, "state.json"))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.backups()[self.KEEP:]:
            shutil.rmtree(old)

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None


def _plain(value):
    return None if value is None else float(value)


def fit_multi_worker(model, strategy, train_ds, validation_ds, epochs, callbacks):
    """`model.fit` for MultiWorkerMirroredStrategy, which Keras 3's own fit fails under (keras-team/keras#20585).

    A copy of the local model is built and compiled in the strategy's scope; each epoch runs Keras'
    own `train_step` / `test_step` on every replica through `strategy.run`, with the same callbacks
    as `fit`. Every worker reads the whole pipeline and takes its share of each global batch, so a
    run on N workers takes the steps a single worker would take with the same global batch.
    """
    with strategy.scope():
        replica_model = keras.models.clone_model(model)
        replica_model.compile_from_config(model.get_compile_config())
        replica_model.set_weights(model.get_weights())
        replica_model.optimizer.build(replica_model.trainable_variables)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_dist, validation_dist = (strategy.experimental_distribute_dataset(ds.with_options(options))
                                   for ds in (train_ds, validation_ds))

    def run_epoch(step):
        @tf.function
        def over(iterator):
            for batch in iterator:
                strategy.run(step, args=(batch,))
        return over

    train_epoch, validation_epoch = run_epoch(replica_model.train_step), run_epoch(replica_model.test_step)
    callback_list = keras.callbacks.CallbackList(callbacks, model=replica_model)
    callback_list.on_train_begin()
    for epoch in range(replica_model._initial_epoch or 0, epochs):
        callback_list.on_epoch_begin(epoch)
        replica_model.reset_metrics()
        train_epoch(iter(train_dist))
        logs = {name: float(value) for name, value in replica_model.get_metrics_result().items()}
        replica_model.reset_metrics()
        validation_epoch(iter(validation_dist))
        logs.update({f"val_{name}": float(value) for name, value in replica_model.get_metrics_result().items()})
        print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        callback_list.on_epoch_end(epoch, logs)
        if replica_model.stop_training:
            break
    callback_list.on_train_end()
    use_moving_average(replica_model)
    model.set_weights(replica_model.get_weights())


def read_csv_log(path):
    """CSVLogger's file -> {metric: [value per epoch]}, keeping the last row of a repeated epoch."""
    rows = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            rows[int(row.pop("epoch"))] = row
    return {key: [float(rows[e][key]) for e in sorted(rows)] for key in next(iter(rows.values()), {})}


def compile_classifier(model, learning_rate, strategy=None):
    """Adam, sparse cross-entropy, accuracy; `learning_rate` is for one replica (see `scaled_learning_rate`)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate if strategy is None else scaled_learning_rate(learning_rate, strategy)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def predict_dataset(model, batched):
    """(probabilities, labels) over a batched (images, labels) dataset, in order, in one pass.

    `predict`, not `predict_on_batch`: under MirroredStrategy, Keras 3's `predict_on_batch` runs the
    whole batch on every replica and returns the outputs once per replica.
    """
    probabilities, labels = [], []
    for x, y in batched:
        probabilities.append(model.predict(x, verbose=0))
        labels.append(y.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def fit_with_early_stopping(model, train_ds, validation_ds, epochs, learning_rate, patience):
    """Compiles (Adam, sparse cross-entropy, accuracy) and fits, keeping the best weights by validation loss.

    Returns (history, seconds per epoch).
    """
    compile_classifier(model, learning_rate)
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=validation_ds, epochs=epochs, callbacks=[stop], verbose=2, shuffle=False)
    return history.history, (time.perf_counter() - start) / len(history.history["loss"])
