"""
Title: Video classification with MoViNet, streamed frame by frame
Description: Fine-tune a causal MoViNet-A0 on short clips (head on a frozen backbone, then all of
it), measure top-1, top-5 and the confusion matrix, and export the clip model (SavedModel and
TFLite) and its stream form: a TFLite model fed one frame at a time, its memory carried as
explicit state inputs and outputs, builtin ops only. The stream model's output after the last
frame is checked against the Keras model on the whole clip.

    tfcourse run video-movinet            # UCF101 from TFDS on Model Garden's Kinetics-600 MoViNet-A0
    tfcourse run video-movinet --smoke    # a small synthetic action set and a tiny MoViNet: a minute on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run video-movinet --config configs/video-movinet-assets.yaml

The last one draws six actions (shapes moving left, right, up, down, growing, shrinking) on the
real BSDS500 photos, as mp4, avi and gif files. Paired actions are each other played backwards, so
no frame tells the class: only the motion does. No MoViNet weights can be had offline, so there the
backbone is randomly initialised and the report says so.

The model is the project's Keras 3 MoViNet (`tfcourse.models.movinet`), because a TF Hub module
cannot be re-exported as a stream TFLite model with builtin ops. The hub modules still work as
backbones: `hub.HubModule(handle, input_key="image")` for the base classifier and
`hub.HubStreamModule(handle)` for the stream ones.
"""

import dataclasses
import os
import resource
import typing

import keras
import numpy as np
import yaml

from tfcourse import export, metrics, runs, train, viz
from tfcourse.data import boxes, images, mnist_m, video
from tfcourse.models import movinet

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    source: str = "ucf101"  # "ucf101" (TFDS, downloads 6.5 GB), a folder of class folders of videos, or "synthetic"
    tfds_data_dir: str = ""  # ucf101: where TFDS keeps it ("" = ~/tensorflow_datasets)
    backgrounds: str = ""  # synthetic: a folder of photos to draw the actions on ("" = generated textures)
    clips_per_class: int = 60  # synthetic
    num_frames: int = 8
    stride: int = 2  # frames between sampled frames
    size: int = 172  # MoViNet-A0's input size
    batch_size: int = 8
    validation_fraction: float = 0.2  # of the training videos (UCF101: of its train split)
    test_fraction: float = 0.2  # folder and synthetic sources; UCF101 has its own test split
    seed: int = 42
    skip_bad_files: bool = True  # False: an unreadable or too-short video stops the run


@dataclasses.dataclass
class ModelConfig:
    spec: typing.Literal[tuple(movinet.SPECS)] = "a0"
    checkpoint: str = movinet.MODEL_GARDEN_CHECKPOINTS["a0_stream"]  # Model Garden checkpoint; "" = random weights
    head_filters: int = 2048
    dropout: float = 0.2


@dataclasses.dataclass
class TrainConfig:
    strategy: typing.Literal["auto", "default", "mirrored", "tpu", "multi_worker"] = "auto"
    frozen_epochs: int = 5  # stage 1: the backbone frozen, the head learns
    frozen_learning_rate: float = 1e-3
    fine_tune_epochs: int = 10  # stage 2: all of it learns
    fine_tune_learning_rate: float = 1e-4
    early_stopping_patience: int = 5


@dataclasses.dataclass
class ExportConfig:
    check_clips: int = 64  # test clips the exports are checked on (the stream TFLite frame by frame)
    plot_clips: int = 4  # clips whose class probabilities over time are drawn


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


SMOKE = {
    "data": {"source": "synthetic", "clips_per_class": 8, "num_frames": 6, "stride": 1, "size": 48, "batch_size": 8},
    "model": {"spec": "tiny", "checkpoint": "", "head_filters": 64},
    "train": {"frozen_epochs": 2, "fine_tune_epochs": 2, "fine_tune_learning_rate": 1e-3},
    "export": {"check_clips": 8, "plot_clips": 2},
}

# ## The data
# Videos are scanned once (unreadable and too-short ones are counted and named), split per class
# with a seed, and decoded into tf.data: `num_frames` frames `stride` apart, resized to `size`.


def load_splits(data, batch_size, work_dir):
    """-> ({split: batched (clip, label) dataset}, class names, summary)."""
    if data.source == "ucf101":
        train_fraction = round(100 * (1 - data.validation_fraction))
        tfds_splits = {"train": f"train[:{train_fraction}%]", "validation": f"train[{train_fraction}%:]", "test": "test"}
        datasets = {}
        for split, tfds_split in tfds_splits.items():
            datasets[split], class_names = video.ucf101_dataset(
                tfds_split, data.num_frames, data.stride, data.size, batch_size, split == "train", data.seed,
                data.tfds_data_dir or None)
        return datasets, class_names, {"source": "tfds:ucf101", "splits": tfds_splits, "skipped": {}}
    summary = {"source": data.source}
    root = data.source
    if data.source == "synthetic":
        root = os.path.join(work_dir, "synthetic_actions")
        summary.update(synthetic=_write_synthetic_actions(data, root))
    folder = video.scan_video_folder(root, data.num_frames, data.stride, data.skip_bad_files)
    indices = images.stratified_split(folder.labels, data.validation_fraction, data.test_fraction, data.seed)
    datasets = {
        split: video.video_file_dataset([folder.files[i] for i in idx], folder.labels[idx], data.num_frames, data.stride,
                                        data.size, batch_size, split == "train", data.seed)
        for split, idx in indices.items()
    }
    summary.update(num_videos=len(folder.files), split_sizes={s: len(i) for s, i in indices.items()},
                   skipped=folder.skipped)
    return datasets, folder.class_names, summary


def _write_synthetic_actions(data, root):
    """The synthetic action set, written once per run directory; -> its summary."""
    if data.backgrounds:
        backgrounds, skipped = mnist_m.load_backgrounds(data.backgrounds, min_size=data.size // 2)
        background_source = {"folder": data.backgrounds, "photos": len(backgrounds), "skipped": skipped}
    else:
        backgrounds = boxes.textured_backgrounds(20, seed=data.seed)
        background_source = {"generated_textures": len(backgrounds)}
    frames = video.frames_needed(data.num_frames, data.stride)
    summary = video.write_synthetic_actions(root + ".tmp", backgrounds, data.clips_per_class, frames, data.size, data.seed)
    if not os.path.isdir(root):  # written whole, then moved, so a resumed run never reads half a set
        os.rename(root + ".tmp", root)
    return {**summary, "root": root, "backgrounds": background_source}


def clips_and_labels(dataset, limit, batch_size):
    """About `limit` clips spread evenly over a batched dataset (whose splits are ordered by class), as arrays."""
    batches = int(dataset.cardinality())
    every = max(1, batches * batch_size // limit) if batches > 0 else 1
    clips, labels = [], []
    for batch_clips, batch_labels in dataset.unbatch().shard(every, 0).batch(batch_size).take(-(-limit // batch_size)):
        clips.append(batch_clips.numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(clips)[:limit], np.concatenate(labels)[:limit]


# ## The model
# A causal MoViNet backbone (the stream form needs it), pooled features, Model Garden's classifier
# head. The same weights run as the clip model (trained, exported as a SavedModel) and as the
# stream model (exported as TFLite).


def make_classifier(config, num_classes):
    momentum = movinet.BATCH_NORM_MOMENTUM if config.model.checkpoint else 0.9  # see movinet_backbone
    backbone = movinet.movinet_backbone(config.model.spec, causal=True, size=config.data.size, batch_norm_momentum=momentum)
    if config.model.checkpoint:
        movinet.load_model_garden_checkpoint(backbone, config.model.checkpoint)
    model = movinet.movinet_classifier(backbone, num_classes, config.model.head_filters, config.model.dropout)
    return model, backbone


def evaluate(model, datasets, class_names):
    """Top-1, top-5 (or top-k with fewer classes), macro F1 and the confusion matrix per split."""
    results = {}
    for split, dataset in datasets.items():
        probabilities, labels = train.predict_dataset(model, dataset)
        k = min(5, len(class_names) - 1)
        results[split] = {**metrics.classification_report(labels, probabilities.argmax(-1), class_names),
                          f"top_{k}_accuracy": metrics.top_k_accuracy(labels, probabilities, k)}
    return results


# ## The lesson


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    strategy = train.get_strategy(config.train.strategy)

    with timings("data"):
        batch_size = train.global_batch_size(config.data.batch_size, strategy)  # data.batch_size is per replica
        datasets, class_names, data_summary = load_splits(config.data, batch_size, checkpoints)
    print(f"Data: {data_summary['source']}, {len(class_names)} classes, {data_summary.get('split_sizes', '')}")

    histories, results = {}, {}

    def train_stage(name, epochs, learning_rate):
        with timings(f"train_{name}"), train.model_scope(strategy):
            train.compile_classifier(model, learning_rate, strategy)
            histories[name] = train.fit_stage(model, datasets["train"], datasets["validation"], epochs,
                                              os.path.join(checkpoints, name), config.train.early_stopping_patience,
                                              strategy)
        results[name] = evaluate(model, datasets, class_names)

    with train.model_scope(strategy):
        model, backbone = make_classifier(config, len(class_names))
    # Stage 1: the backbone is frozen (its batch norm in inference mode); only the head learns.
    backbone.trainable = False
    train_stage("frozen", config.train.frozen_epochs, config.train.frozen_learning_rate)
    frozen_weights = os.path.join(checkpoints, "frozen", "final.weights.h5")
    # Stage 2: all of it learns, batch norm included, from the stage 1 head.
    if config.train.fine_tune_epochs:
        backbone.trainable = True
        train_stage("fine_tuned", config.train.fine_tune_epochs, config.train.fine_tune_learning_rate)

    # Export the better stage by validation accuracy: the clip model, and the same weights streamed.
    chosen = max(results, key=lambda name: results[name]["validation"]["accuracy"])
    if chosen == "frozen":
        model.load_weights(frozen_weights)
    with timings("export"):
        test_clips, test_labels = clips_and_labels(datasets["test"], config.export.check_clips, batch_size)
        stream = movinet.stream_classifier(model, config.model.spec, config.data.size)
        export_metrics, stream_probabilities = export.export_video_classifier(
            model, stream, run_dir, class_names, test_clips, test_labels)

    stage_starts = {"frozen": 1, "fine_tuned": len(histories["frozen"]["loss"]) + 1}
    viz.plot_training_curves({name: (stage_starts[name], h) for name, h in histories.items()},
                             os.path.join(run_dir, "training_curves.png"), "video-movinet: frozen, then fine-tuned")
    viz.plot_confusion_matrix(results[chosen]["test"]["confusion_matrix"], class_names,
                              os.path.join(run_dir, "confusion_matrix.png"), f"{chosen} model, test split")
    shown = [int(np.flatnonzero(test_labels == label)[0]) for label in np.unique(test_labels)][:config.export.plot_clips]
    viz.plot_stream_probabilities([test_clips[i] for i in shown], [stream_probabilities[i] for i in shown],
                                  [class_names[test_labels[i]] for i in shown], class_names,
                                  os.path.join(run_dir, "stream_probabilities.png"))
    report = {
        "lesson": "video-movinet",
        "config": dataclasses.asdict(config),
        "data": {**data_summary, "class_names": class_names},
        "backbone": {"spec": config.model.spec, "checkpoint": config.model.checkpoint or None,
                     "parameters": backbone.count_params()},
        "note": _honesty_note(config),
        "metrics": results,
        "exported_stage": chosen,
        "export": export_metrics,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timings_seconds": dict(timings),
    }
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def predict_files(run_dir, files, top_k=3, fmt="saved_model"):
    """`tfcourse predict` on a video-movinet run: the top-k classes of each video file, its clip sampled as
    in training. Only use runs you trust: a SavedModel is a program."""
    predict, class_names, _ = export.load_feature_classifier(run_dir, fmt)
    with open(os.path.join(run_dir, "config.yaml")) as f:
        data = yaml.safe_load(f)["data"]
    results = []
    for path in files:
        clip = video.read_video(path, data["num_frames"], data["stride"], data["size"])
        results.append({"file": path, "top_k": export.top_k_classes(predict(clip[None])[0], class_names, top_k)})
    return results


def _honesty_note(config):
    notes = []
    if not config.model.checkpoint:
        notes.append(f"The MoViNet-{config.model.spec} backbone is randomly initialised, not pretrained: the frozen "
                     "stage trains a head on random features, and the fine-tuned stage trains the whole network "
                     "from scratch. These figures show what the pipeline does, not what transfer from Kinetics does.")
    if config.data.source == "synthetic":
        notes.append("The data is the synthetic action set (shapes moving on photos), not real video.")
    return " ".join(notes)


def summary_markdown(report):
    k = next(key for key in report["metrics"]["frozen"]["test"] if key.startswith("top_") and key != "top_1")
    lines = [
        "# video-movinet run", "",
        f"Backbone: MoViNet-{report['backbone']['spec']} (causal), {report['backbone']['parameters']:,} parameters, "
        f"weights: {report['backbone']['checkpoint'] or 'random'}. Data: {report['data']['source']}, "
        f"{len(report['data']['class_names'])} classes.", "",
    ]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += [f"| stage | train top-1 | val top-1 | test top-1 | test {k.removesuffix('_accuracy').replace('_', '-')} |",
              "|---|---|---|---|---|"]
    for name, result in report["metrics"].items():
        lines.append(f"| {name} | {result['train']['accuracy']:.3f} | {result['validation']['accuracy']:.3f} | "
                     f"{result['test']['accuracy']:.3f} | {result['test'][k]:.3f} |")
    stream = report["export"]["stream_float32"]
    lines += [
        "", f"Exported: the {report['exported_stage']} model.", "",
        "| export | test acc | max abs diff vs Keras clip | size (KB) |", "|---|---|---|---|",
        *[f"| {name} | {report['export'][name]['accuracy']:.3f} | {report['export'][name]['max_abs_diff']:.1e} | "
          f"{report['export'][name]['size_bytes'] / 1024:.0f} |" for name in ("saved_model", "float32", "dynamic_range", "stream_float32")],
        "", f"Stream TFLite: {stream['states']} state tensors, {stream['ms_per_frame_median']:.1f} ms per frame (median) "
        f"on this CPU; Keras stream vs clip: {report['export']['keras_stream']['max_abs_diff']:.1e}.",
        f"Peak memory: {report['peak_memory_mb']:.0f} MB.",
        "", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), "",
    ]
    return "\n".join(lines)
