"""
Title: Keyword spotting, from clips to a stream
Description: Recognise spoken keywords in one-second clips with a spectrogram CNN trained from
scratch and with a head on YAMNet embeddings, then slide the CNN over a long recording and print
timestamped detections.

    tfcourse run keywords            # TFDS speech_commands, YAMNet from TF Hub
    tfcourse run keywords --smoke    # 4 words synthesised with espeak-ng, random YAMNet: a minute on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run keywords --config configs/keywords-assets.yaml

Offline, the clips are synthesised with espeak-ng (several voices, speeds and pitches) over
noise from real recordings, and the split keeps every voice inside one split, so the test voices
are voices the models never heard.
"""

import dataclasses
import glob
import os

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, export, metrics, runs, train, viz
from tfcourse.config import AudioModelConfig
from tfcourse.data import audio, speech, splits
from tfcourse.models import yamnet

CLIP_SAMPLES = speech.CLIP_SAMPLES


@dataclasses.dataclass
class DataConfig:
    source: str = "tfds:speech_commands"  # or "synthetic" (espeak-ng), or class folders of 1 s WAVs
    tfds_data_dir: str = ""  # where TFDS keeps prepared datasets; "" is its default (~/tensorflow_datasets)
    noise_dir: str = ""  # WAVs of real recordings mixed under synthetic words; "" is Gaussian noise
    words: int = 10  # the first N of yes, no, up, down, left, right, on, off, stop, go (synthetic)
    voices: int = 8  # the first N espeak-ng voices (synthetic)
    validation_fraction: float = 0.25
    test_fraction: float = 0.25
    seed: int = 42


@dataclasses.dataclass
class TrainConfig:
    cnn_epochs: int = 30
    cnn_learning_rate: float = 1e-3
    head_epochs: int = 40
    head_learning_rate: float = 1e-3
    batch_size: int = 32
    early_stopping_patience: int = 6


@dataclasses.dataclass
class StreamConfig:
    words: int = 8  # spoken one after another in the long recording
    hop_seconds: float = 0.1  # how far the one-second window slides
    threshold: float = 0.6  # the least probability that counts as a detection


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: AudioModelConfig = dataclasses.field(default_factory=AudioModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    stream: StreamConfig = dataclasses.field(default_factory=StreamConfig)


SMOKE = {
    "data": {"source": "synthetic", "words": 4, "voices": 4},
    "model": {"weights": "random", "hidden_units": 32},
    "train": {"cnn_epochs": 4, "head_epochs": 4},
    "stream": {"words": 4},
}

# ## The data: one-second clips


def fix_length(waveform):
    """Pads with silence or crops to exactly one second."""
    waveform = waveform[:CLIP_SAMPLES]
    return tf.pad(waveform, [[0, CLIP_SAMPLES - tf.shape(waveform)[0]]])


def load_clips(data, work_dir):
    """-> ({split: unbatched (waveform [16000], label)}, class names, summary)."""
    if data.source.startswith("tfds:"):
        import tensorflow_datasets as tfds

        datasets, info = tfds.load(data.source[5:], split=["train", "validation", "test"], as_supervised=True,
                                   with_info=True, data_dir=data.tfds_data_dir or None)
        to_clip = lambda a, y: (fix_length(tf.cast(a, tf.float32) / 32768.0), y)
        clips = {s: ds.map(to_clip, num_parallel_calls=tf.data.AUTOTUNE) for s, ds in zip(("train", "validation", "test"), datasets)}
        return clips, info.features["label"].names, {"source": data.source, "num_skipped": 0, "skipped": []}
    source, noise_files = data.source, sorted(glob.glob(os.path.join(data.noise_dir, "*.wav"))) if data.noise_dir else []
    if data.noise_dir and not noise_files:
        raise UserError(f"data.noise_dir {data.noise_dir!r} holds no .wav files.")
    if source == "synthetic":
        source = speech.synthesize_keywords(os.path.join(work_dir, "keywords"), noise_files, speech.WORDS[: data.words],
                                            speech.VOICES[: data.voices], seed=data.seed)
    files = audio.scan_audio_folder(source)
    indices = splits.group_split(files.groups, data.validation_fraction, data.test_fraction, data.seed)  # by speaker
    clips = {
        split: audio.clip_dataset([files.files[i] for i in idx], files.labels[idx]).map(
            lambda w, y: (fix_length(w), y), num_parallel_calls=tf.data.AUTOTUNE)
        for split, idx in indices.items()
    }
    summary = {
        "source": source, "synthetic": data.source == "synthetic",
        "noise": f"{len(noise_files)} real recordings from {data.noise_dir}" if noise_files else "Gaussian",
        "split_sizes": {s: len(i) for s, i in indices.items()},
        "voices_per_split": {s: sorted(set(files.groups[i].tolist())) for s, i in indices.items()},
        "num_skipped": len(files.skipped), "skipped": files.skipped,
    }
    return clips, files.class_names, summary


# ## The models


def keyword_cnn(num_classes):
    """Waveform [batch, 16000] -> log-mel [98, 64] (YAMNet's front end) -> a small CNN, from scratch."""
    waveform = keras.Input((CLIP_SAMPLES,), name="waveform")
    x = yamnet.LogMelSpectrogram(name="log_mel")(waveform)
    x = keras.layers.Reshape((-1, yamnet.MEL_BANDS, 1))(x)
    x = keras.layers.BatchNormalization()(x)
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(waveform, keras.layers.Dense(num_classes, activation="softmax")(x), name="keyword_cnn")


def yamnet_embeddings(model, clips):
    """(mean YAMNet embedding [1024], label) per clip, computed once: cached."""
    embed = lambda w, y: (tf.reduce_mean(model(w)[1], axis=0), y)
    return clips.map(embed).cache()


def evaluate(model, batched, class_names):
    probabilities, labels = train.predict_dataset(model, batched)
    return metrics.classification_report(labels, probabilities.argmax(-1), class_names)


# ## Streaming: slide the CNN over a long recording


def detect(model, waveform, class_names, hop_seconds, threshold):
    """Timestamped detections: runs of windows whose top class passes `threshold`, merged per word."""
    hop = int(hop_seconds * audio.SAMPLE_RATE)
    windows = tf.signal.frame(tf.pad(waveform, [[0, CLIP_SAMPLES]]), CLIP_SAMPLES, hop)
    probabilities = model.predict(windows, verbose=0)
    detections = []
    for i, p in enumerate(probabilities):
        word, confidence, start = class_names[int(p.argmax())], float(p.max()), i * hop_seconds
        if confidence < threshold or word.startswith("_"):  # _background_, _silence_, _unknown_: no keyword
            continue
        if detections and detections[-1]["word"] == word and start - detections[-1]["last_window"] <= hop_seconds + 1e-9:
            detections[-1].update(last_window=start, confidence=max(confidence, detections[-1]["confidence"]))
        else:
            detections.append({"word": word, "first_window": start, "last_window": start, "confidence": confidence})
    for d in detections:  # a word inside every window of a run sits around the run's middle
        d["time"] = round((d["first_window"] + d["last_window"] + 1.0) / 2, 2)
    return detections, probabilities


def score_detections(detections, truth, tolerance_seconds=0.75):
    """Precision and recall of detections against (start, end, word) truth: same word, centre within tolerance."""
    unmatched = list(truth)
    hits = 0
    for d in detections:
        match = next((t for t in unmatched if t[2] == d["word"] and abs((t[0] + t[1]) / 2 - d["time"]) <= tolerance_seconds), None)
        if match:
            unmatched.remove(match)
            hits += 1
    return {"precision": hits / len(detections) if detections else 0.0, "recall": hits / len(truth) if truth else 0.0}


def run(config, run_dir):
    timings = runs.Timings()
    work_dir = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    with timings("data"):
        clips, class_names, data_summary = load_clips(config.data, work_dir)
    batch = config.train.batch_size
    batched = {s: ds.batch(batch).prefetch(tf.data.AUTOTUNE) for s, ds in clips.items()}
    batched["train"] = clips["train"].cache().shuffle(10_000, seed=config.data.seed).batch(batch).prefetch(tf.data.AUTOTUNE)

    cnn = keyword_cnn(len(class_names))
    with timings("train_cnn"):
        histories = {"spectrogram CNN": (1, train.fit_with_early_stopping(cnn, batched["train"], batched["validation"], config.train.cnn_epochs,
                                                config.train.cnn_learning_rate, config.train.early_stopping_patience)[0])}
    results = {"spectrogram_cnn": {s: evaluate(cnn, ds, class_names) for s, ds in batched.items()}}

    model, weights_source, pretrained = yamnet.load_pretrained(config.model.weights, config.model.hub_handle)
    head = yamnet.embedding_head(len(class_names), config.model.hidden_units, config.model.dropout)
    with timings("train_yamnet_head"):
        embedded = {s: yamnet_embeddings(model, ds).batch(batch) for s, ds in clips.items()}
        histories["YAMNet head"] = (1, train.fit_with_early_stopping(head, embedded["train"], embedded["validation"], config.train.head_epochs,
                                           config.train.head_learning_rate, config.train.early_stopping_patience)[0])
    results["yamnet_head"] = {s: evaluate(head, ds, class_names) for s, ds in embedded.items()}

    with timings("stream"):
        stream = stream_demo(config, cnn, class_names, data_summary, run_dir)
    with timings("export"):
        test_waveforms, test_labels = zip(*clips["test"].as_numpy_iterator())
        test_labels = np.array(test_labels)
        export_metrics = export.export_waveform_classifier(
            cnn, tf.TensorSpec([None, CLIP_SAMPLES], tf.float32, name="waveform"), run_dir, test_waveforms, test_labels, class_names)

    report = {
        "lesson": "keywords", "config": dataclasses.asdict(config),
        "data": {**data_summary, "class_names": class_names},
        "yamnet": {"weights": weights_source, "pretrained": pretrained},
        "note": " ".join(filter(None, [
            "" if pretrained else "YAMNet is randomly initialised: its head's figures show the pipeline works, nothing more.",
            "The clips are synthesised with espeak-ng, not recorded speech." if data_summary.get("synthetic") else ""])),
        "metrics": results, "stream": stream, "export": export_metrics, "timings_seconds": dict(timings),
    }
    viz.plot_training_curves(histories, os.path.join(run_dir, "training_curves.png"), "keywords")
    viz.plot_confusion_matrix(results["spectrogram_cnn"]["test"]["confusion_matrix"], class_names,
                              os.path.join(run_dir, "confusion_matrix.png"), "spectrogram CNN, test voices")
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def stream_demo(config, cnn, class_names, data_summary, run_dir):
    """A long recording of test-voice words (synthetic data) with its detections, scored and plotted."""
    if not data_summary.get("synthetic"):
        return {"skipped": "the streaming demo speaks its recording with espeak-ng: use data.source=synthetic"}
    rng = np.random.default_rng(config.data.seed)
    words = [str(w) for w in rng.choice([c for c in class_names if not c.startswith("_")], config.stream.words)]
    voice = data_summary["voices_per_split"]["test"][0].replace("-f", "+f")
    noise = sorted(glob.glob(os.path.join(config.data.noise_dir, "*.wav"))) if config.data.noise_dir else []
    waveform, truth = speech.long_recording(words, voice, noise, seed=config.data.seed)
    detections, _ = detect(cnn, waveform, class_names, config.stream.hop_seconds, config.stream.threshold)
    log_mel = np.asarray(yamnet.LogMelSpectrogram()(waveform))
    viz.plot_stream(waveform, log_mel, detections, truth, os.path.join(run_dir, "stream.png"), audio.SAMPLE_RATE,
                    yamnet.HOP_SAMPLES)
    return {"voice": voice, "seconds": len(waveform) / audio.SAMPLE_RATE, "truth": truth,
            "detections": [{k: d[k] for k in ("time", "word", "confidence")} for d in detections],
            **score_detections(detections, truth)}


def summary_markdown(report):
    lines = ["# keywords run", "", f"Data: {report['data']['source']} ({len(report['data']['class_names'])} words).", ""]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| model | train acc | val acc | test acc (unheard voices) |", "|---|---|---|---|"]
    for name, r in report["metrics"].items():
        lines.append(f"| {name} | {r['train']['accuracy']:.3f} | {r['validation']['accuracy']:.3f} | {r['test']['accuracy']:.3f} |")
    stream = report["stream"]
    if "detections" in stream:
        lines += ["", f"Stream ({stream['seconds']:.1f} s, voice {stream['voice']}): precision {stream['precision']:.2f}, "
                  f"recall {stream['recall']:.2f}.", "", "| time (s) | detected | confidence |", "|---|---|---|"]
        lines += [f"| {d['time']:.2f} | {d['word']} | {d['confidence']:.2f} |" for d in stream["detections"]]
    lines += [""] + runs.export_table(report["export"])
    return "\n".join(lines + [""])
