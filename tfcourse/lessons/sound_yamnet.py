"""
Title: Sound classification with YAMNet embeddings
Description: Classify environmental sounds with a head on YAMNet's frame embeddings (computed once
and cached), clip predictions as the mean over frames, against a spectrogram CNN trained from
scratch; export a waveform-to-class SavedModel and TFLite models with builtin ops only.

    tfcourse run sound-yamnet            # ESC-50 from its public archive, YAMNet from TF Hub
    tfcourse run sound-yamnet --smoke    # synthetic tones and a random YAMNet: seconds on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run sound-yamnet --config configs/sound-yamnet-assets.yaml

The last one uses 91 real ESC-50 clips (11 classes, folds 3-5) and YAMNet weights imported from
the YAMNet TFLite file in the assets.

The lesson runs YAMNet as the project's own Keras model (weights from TF Hub or a TFLite file), so
it can be fine-tuned and exported with builtin ops. The TF Hub module itself also works as a
backbone through the hub layer: `hub.HubModule(yamnet.HUB_HANDLE, output_key=1)` maps waveforms
[batch, samples] to embeddings [batch, patches, 1024].
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from tfcourse import export, metrics, runs, train, viz
from tfcourse.config import AudioModelConfig
from tfcourse.data import audio, splits
from tfcourse.models import yamnet

ESC50_ARCHIVE = "https://github.com/karoldvl/ESC-50/archive/master.zip"


@dataclasses.dataclass
class DataConfig:
    source: str = "esc50"  # "esc50" (downloads it), a metadata CSV, a folder of class folders, or "synthetic"
    audio_dir: str = ""  # the clips of a metadata CSV; "" is the folder "audio" beside it
    validation_fraction: float = 0.2  # used where the metadata has no folds
    test_fraction: float = 0.2
    seed: int = 42
    skip_bad_files: bool = True


@dataclasses.dataclass
class TrainConfig:
    head_epochs: int = 40
    head_learning_rate: float = 1e-3
    fine_tune_epochs: int = 0  # > 0: then train YAMNet's network too, end to end, at a low rate
    fine_tune_learning_rate: float = 1e-5
    baseline_epochs: int = 40
    baseline_learning_rate: float = 1e-3
    batch_size: int = 64
    early_stopping_patience: int = 8


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: AudioModelConfig = dataclasses.field(default_factory=AudioModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


SMOKE = {
    "data": {"source": "synthetic"},
    "model": {"weights": "random", "hidden_units": 32},
    "train": {"head_epochs": 5, "baseline_epochs": 3, "batch_size": 32},
}

# ## The data: clips, their splits, and the frames YAMNet sees


def load_clips(data, work_dir):
    """-> (AudioFiles, {split: indices}, how it was split).

    The metadata's folds where each split then holds every class; otherwise a stratified split that
    keeps each source recording inside one split.
    """
    source, audio_dir = data.source, data.audio_dir
    if source == "esc50":  # 2,000 clips, 44.1 kHz (resampled on load), 5 folds
        root = os.path.join(keras.utils.get_file("ESC-50-master.zip", ESC50_ARCHIVE, extract=True), "ESC-50-master")
        source, audio_dir = os.path.join(root, "meta", "esc50.csv"), os.path.join(root, "audio")
    elif source == "synthetic":
        source = audio.write_synthetic_clips(os.path.join(work_dir, "synthetic_clips"))
    if source.endswith(".csv"):
        clips = audio.read_audio_metadata(source, audio_dir or os.path.join(os.path.dirname(source), "audio"), data.skip_bad_files)
    else:
        clips = audio.scan_audio_folder(source, data.skip_bad_files)
    if clips.folds is not None and len(np.unique(clips.folds)) >= 3:
        folds = np.unique(clips.folds)
        indices = splits.fold_split(clips.folds, validation_folds=[folds[-2]], test_folds=[folds[-1]])
        counts = {split: np.bincount(clips.labels[idx], minlength=len(clips.class_names)) for split, idx in indices.items()}
        if all(c.min() > 0 for c in counts.values()):
            return clips, indices, f"folds (test {folds[-1]}, validation {folds[-2]})"
        why = f"folds {folds.tolist()} hold {np.bincount(clips.folds)[folds].tolist()} clips, not every class in each"
    else:
        why = "the metadata has no folds"
    indices = splits.grouped_stratified_split(clips.labels, clips.groups, data.validation_fraction, data.test_fraction, data.seed)
    return clips, indices, f"source recording, stratified ({why})"


def frame_features(model, clips, indices):
    """Per clip, computed once: (log-mel patches [p, 96, 64], embeddings [p, 1024]). This is the cache."""
    features = {}
    for i in indices:
        waveform = audio.load_clip(clips.files[i])
        log_mel = model.spectrogram(yamnet.pad_waveform(waveform))
        patches = tf.signal.frame(log_mel, yamnet.PATCH_FRAMES, yamnet.PATCH_HOP_FRAMES, axis=0)
        _, embeddings = model.network(patches)
        features[i] = (patches.numpy(), np.asarray(embeddings))
    return features


def frames_dataset(features, clips, indices, which, batch_size, training, seed):
    """Every frame of the clips at `indices`, labelled with its clip's class."""
    x = np.concatenate([features[i][which] for i in indices])
    y = np.concatenate([np.full(len(features[i][which]), clips.labels[i]) for i in indices])
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(len(y), seed=seed)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ## The models: a head on embeddings, and a spectrogram CNN from scratch


def spectrogram_cnn(num_classes):
    """The baseline: a small CNN on the same log-mel patches, from random weights."""
    patches = keras.Input((yamnet.PATCH_FRAMES, yamnet.MEL_BANDS), name="patches")
    x = keras.layers.Reshape((yamnet.PATCH_FRAMES, yamnet.MEL_BANDS, 1))(patches)
    x = keras.layers.BatchNormalization()(x)
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(patches, keras.layers.Dense(num_classes, activation="softmax")(x), name="spectrogram_cnn")


@keras.saving.register_keras_serializable(package="tfcourse")
class WaveformClassifier(keras.Model):
    """Raw 16 kHz waveform [samples], any length -> class probabilities [classes]: the mean over frames."""

    def __init__(self, yamnet_model, head, **kwargs):
        super().__init__(**kwargs)
        self.yamnet, self.head = yamnet_model, head

    def call(self, waveform):
        _, embeddings, _ = self.yamnet(waveform)
        return tf.reduce_mean(self.head(embeddings), axis=0)


def clip_predictions(frame_model, features, indices, which):
    """Each clip's class probabilities: the mean of its frames'."""
    return np.stack([np.asarray(frame_model(features[i][which])).mean(0) for i in indices])


def run(config, run_dir):
    timings = runs.Timings()
    work_dir = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    with timings("data"):
        clips, indices, split_by = load_clips(config.data, work_dir)
    n = len(clips.class_names)
    print(f"{len(clips.files)} clips, {n} classes, split sizes { {k: len(v) for k, v in indices.items()} }, "
          f"{len(clips.skipped)} skipped")
    model, weights_source, pretrained = yamnet.load_pretrained(config.model.weights, config.model.hub_handle)
    with timings("embedding_cache"):
        features = frame_features(model, clips, np.concatenate(list(indices.values())))
    batch, seed = config.train.batch_size, config.data.seed
    data = {which: {split: frames_dataset(features, clips, idx, which, batch, split == "train", seed)
                    for split, idx in indices.items()} for which in (0, 1)}  # 0: patches, 1: embeddings

    head = yamnet.embedding_head(n, config.model.hidden_units, config.model.dropout)
    with timings("train_head"):
        history, cached_epoch_seconds = train.fit_with_early_stopping(head, data[1]["train"], data[1]["validation"], config.train.head_epochs,
                                            config.train.head_learning_rate, config.train.early_stopping_patience)
    with timings("epoch_recomputing_embeddings"):  # what each epoch would cost without the cache
        frame_features(model, clips, indices["train"])
        head.fit(data[1]["train"], epochs=1, verbose=0)
    results = {"yamnet_head": {s: clip_report(head, features, clips, idx, 1) for s, idx in indices.items()}}
    histories = {"yamnet head": (1, history)}

    if config.train.fine_tune_epochs:  # YAMNet's network and the head, end to end, on the cached patches
        for layer in model.network.layers:  # imported batch norm is identity-plus-bias: inference mode only
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        end_to_end = keras.Model(model.network.inputs, head(model.network.outputs[1]))
        with timings("fine_tune"):
            histories["fine-tuned"] = (len(history["loss"]) + 1, train.fit_with_early_stopping(
                end_to_end, data[0]["train"], data[0]["validation"], config.train.fine_tune_epochs,
                config.train.fine_tune_learning_rate, config.train.early_stopping_patience)[0])
        features = frame_features(model, clips, np.concatenate(list(indices.values())))  # new embeddings
        results["fine_tuned"] = {s: clip_report(head, features, clips, idx, 1) for s, idx in indices.items()}

    baseline = spectrogram_cnn(n)
    with timings("train_baseline"):
        histories["spectrogram CNN"] = (1, train.fit_with_early_stopping(baseline, data[0]["train"], data[0]["validation"], config.train.baseline_epochs,
                                               config.train.baseline_learning_rate, config.train.early_stopping_patience)[0])
    results["spectrogram_cnn"] = {s: clip_report(baseline, features, clips, idx, 0) for s, idx in indices.items()}

    with timings("export"):
        test_waveforms = [np.asarray(audio.load_clip(clips.files[i]), "float32") for i in indices["test"]]
        export_metrics = export.export_waveform_classifier(
            WaveformClassifier(model, head), tf.TensorSpec([None], tf.float32, name="waveform"), run_dir,
            test_waveforms, clips.labels[indices["test"]], clips.class_names,
        )

    report = {
        "lesson": "sound-yamnet",
        "config": dataclasses.asdict(config),
        "data": {"class_names": clips.class_names, "num_clips": len(clips.files), "num_skipped": len(clips.skipped),
                 "skipped": clips.skipped, "mixed_down": clips.mixed_down,
                 "split_sizes": {k: len(v) for k, v in indices.items()},
                 "split_by": split_by},
        "backbone": {"name": "yamnet", "weights": weights_source, "pretrained": pretrained},
        "note": "" if pretrained else "YAMNet is randomly initialised: these figures show the pipeline works, nothing more.",
        "metrics": results,
        "embedding_cache": {"cached_epoch_seconds": cached_epoch_seconds,
                            "recomputing_epoch_seconds": timings["epoch_recomputing_embeddings"],
                            "speedup": timings["epoch_recomputing_embeddings"] / cached_epoch_seconds},
        "export": export_metrics,
        "timings_seconds": dict(timings),
    }
    plots(run_dir, report, histories, model, head, clips, indices)
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def clip_report(frame_model, features, clips, indices, which):
    probabilities = clip_predictions(frame_model, features, indices, which)
    return metrics.classification_report(clips.labels[indices], probabilities.argmax(-1), clips.class_names)


# ## Plots


def plots(run_dir, report, histories, model, head, clips, indices):
    viz.plot_training_curves(histories, os.path.join(run_dir, "training_curves.png"), "sound-yamnet")
    best = report["metrics"]["yamnet_head"]["test"]
    viz.plot_confusion_matrix(best["confusion_matrix"], clips.class_names, os.path.join(run_dir, "confusion_matrix.png"),
                              "YAMNet head, test clips")
    path = clips.files[indices["test"][0]]
    waveform = np.asarray(audio.load_clip(path))
    _, embeddings, log_mel = model(waveform)
    viz.plot_audio_clip(waveform, np.asarray(log_mel), np.asarray(head(embeddings)), clips.class_names,
                        os.path.join(run_dir, "clip.png"), os.path.basename(path), yamnet.SAMPLE_RATE,
                        yamnet.HOP_SAMPLES, yamnet.PATCH_HOP_SAMPLES)


def predict_files(run_dir, files, top_k=3, fmt="saved_model"):
    """WAV files (any sample rate: resampled to 16 kHz) -> the exported classifier's top-k classes.
    The SavedModel is a program: only use runs you trust."""
    predict, class_names = export.load_float_classifier(run_dir, fmt)
    results = []
    for path in files:
        waveform = np.asarray(audio.load_clip(path), "float32")
        probabilities = np.asarray(predict(waveform)).reshape(-1)
        results.append({"file": path, "top_k": export.top_k_classes(probabilities, class_names, top_k),
                        "seconds": round(len(waveform) / audio.SAMPLE_RATE, 3)})
    return results


def summary_markdown(report):
    lines = ["# sound-yamnet run", "",
             f"YAMNet weights: {report['backbone']['weights']}. {report['data']['num_clips']} clips, "
             f"{len(report['data']['class_names'])} classes, split by {report['data']['split_by']}, "
             f"{report['data']['num_skipped']} skipped.", ""]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| model | train clip acc | val clip acc | test clip acc |", "|---|---|---|---|"]
    for name, r in report["metrics"].items():
        lines.append(f"| {name} | {r['train']['accuracy']:.3f} | {r['validation']['accuracy']:.3f} | {r['test']['accuracy']:.3f} |")
    cache = report["embedding_cache"]
    lines += ["", f"Embedding cache: an epoch takes {cache['cached_epoch_seconds']:.2f} s cached vs "
              f"{cache['recomputing_epoch_seconds']:.2f} s recomputing ({cache['speedup']:.0f}x).", ""]
    lines += runs.export_table(report["export"])
    return "\n".join(lines + [""])
