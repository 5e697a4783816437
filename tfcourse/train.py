"""Training: the tf.distribute strategy, the callbacks every lesson uses, and resumable stages."""

import csv
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")


def get_strategy(name="auto"):
    """`auto`: a TPU if the cluster resolver finds one, MirroredStrategy on >1 GPU, else default."""
    if name not in STRATEGIES:
        raise UserError(f"train.strategy {name!r} is unknown; choose one of: {', '.join(STRATEGIES)}.")
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
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def set_mixed_precision(enabled):
    keras.mixed_precision.set_global_policy("mixed_float16" if enabled else "float32")


def fit_stage(model, train_ds, validation_ds, epochs, stage_dir, patience):
    """Trains one stage, resumably; returns its history {metric: [per epoch]}.

    - BackupAndRestore: rerunning an interrupted command continues from the last epoch.
    - A finished stage leaves `final.weights.h5` and `history.json`; a rerun loads them instead
      of training again, so a run interrupted in a later stage resumes there.
    - `best.keras` is the best checkpoint by validation loss; early stopping restores it.
    - `log.csv` is the per-epoch log.
    """
    final_weights = os.path.join(stage_dir, "final.weights.h5")
    history_path = os.path.join(stage_dir, "history.json")
    if os.path.isfile(final_weights) and os.path.isfile(history_path):
        model.load_weights(final_weights)
        with open(history_path) as f:
            return json.load(f)
    os.makedirs(stage_dir, exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(stage_dir, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(stage_dir, "best.keras"), monitor="val_loss", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(os.path.join(stage_dir, "log.csv"), append=True),
    ]
    # shuffle=False: the tf.data pipeline shuffles (Keras ignores the flag for datasets, with a warning)
    model.fit(train_ds, validation_data=validation_ds, epochs=epochs, callbacks=callbacks, verbose=2, shuffle=False)
    history = read_csv_log(os.path.join(stage_dir, "log.csv"))  # all epochs, also across a resume
    model.save_weights(final_weights)
    with open(history_path, "w") as f:
        json.dump(history, f)
    return history


def read_csv_log(path):
    """CSVLogger's file -> {metric: [value per epoch]}, keeping the last row of a repeated epoch."""
    rows = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            rows[int(row.pop("epoch"))] = row
    return {key: [float(rows[e][key]) for e in sorted(rows)] for key in next(iter(rows.values()), {})}


def compile_classifier(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def predict_dataset(model, batched):
    """(probabilities, labels) over a batched (images, labels) dataset, in order."""
    probabilities, labels = [], []
    for x, y in batched:
        probabilities.append(model.predict_on_batch(x))
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
