"""
Title: Crop disease classification with transfer learning
Description: Classify leaf diseases with a pretrained backbone, frozen then fine-tuned, against
the same network trained from scratch; export SavedModel and TFLite models checked against Keras.

    tfcourse run crop-disease            # EfficientNet-B0 from TF Hub on TFDS plant_village
    tfcourse run crop-disease --smoke    # synthetic images and a tiny model: minutes on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run crop-disease --config configs/crop-disease-assets.yaml

The last one trains on 180 real PlantVillage apple leaves (4 classes) with a MobileNetV2 whose
ImageNet weights are imported from a quantized TFLite classifier: a real backbone, offline.
"""

import dataclasses
import os
import typing

import keras
import numpy as np

from tfcourse import export, metrics, runs, train, viz
from tfcourse.config import ExportConfig, ImageDataConfig, TrainConfig
from tfcourse.data import images
from tfcourse.models.backbones import ARCHITECTURES, build_backbone
from tfcourse.models.classifier import build_classifier

# ## Configuration
# Defaults: EfficientNet-B0 from TF Hub on TFDS plant_village. `configs/*.yaml` and `--set`
# override them.


@dataclasses.dataclass
class ModelConfig:
    backbone: typing.Literal[tuple(ARCHITECTURES)] = "efficientnet_b0"
    source: str = "hub"  # hub | imagenet | random | path to .weights.h5 | path to .tflite
    hub_handle: str = ""  # "" is the backbone's TF Hub handle; or a local SavedModel folder
    width_multiplier: float = 1.0  # MobileNetV2 alpha, for random weights (the smoke run)
    dropout: float = 0.2


@dataclasses.dataclass
class Config:
    data: ImageDataConfig = dataclasses.field(default_factory=ImageDataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


SMOKE = {
    "data": {"source": "synthetic", "image_size": 64, "batch_size": 16, "validation_fraction": 0.2, "test_fraction": 0.2},
    "model": {"backbone": "mobilenet_v2", "source": "random", "width_multiplier": 0.35},
    "train": {"feature_epochs": 3, "fine_tune_epochs": 2, "fine_tune_layers": 10, "fine_tune_learning_rate": 1e-4,
              "scratch_epochs": 3},
    "export": {"representative_images": 20, "max_quantized_accuracy_drop": 0.2},
}

# ## The data
# A folder of class folders is scanned (undecodable files are counted and skipped), split per
# class with a seed, decoded to uint8 and cached; TFDS datasets come split by TFDS.


def load_splits(data, work_dir):
    """-> ({split: unbatched (uint8 image, label) dataset}, split sizes or None, class names, summary)."""
    if data.source.startswith("tfds:"):
        splits, class_names = images.tfds_splits(
            data.source[5:], data.image_size, data.validation_fraction, data.test_fraction, data.tfds_data_dir or None
        )
        return splits, dict.fromkeys(splits), class_names, {"source": data.source, "num_skipped": 0, "skipped": []}
    source = data.source
    if source == "synthetic":
        source = images.write_synthetic_image_folder(os.path.join(work_dir, "synthetic_images"), image_size=data.image_size)
    folder = images.scan_image_folder(source, data.skip_bad_files)
    indices = images.stratified_split(folder.labels, data.validation_fraction, data.test_fraction, data.seed)
    summary = {
        "source": source,
        "synthetic": data.source == "synthetic",
        "num_images": len(folder.files),
        "per_split_per_class": {
            split: dict(zip(folder.class_names, np.bincount(folder.labels[idx], minlength=len(folder.class_names)).tolist()))
            for split, idx in indices.items()
        },
        "num_skipped": len(folder.skipped),
        "skipped": folder.skipped,
    }
    splits = {split: images.folder_split(folder, idx, data.image_size) for split, idx in indices.items()}
    return splits, {split: len(idx) for split, idx in indices.items()}, folder.class_names, summary


# ## The models
# One functional model, uint8 images in and class probabilities out, over a backbone that is
# pretrained (transfer) or randomly initialised (scratch).


def make_classifier(config, num_classes, source):
    backbone = build_backbone(
        config.model.backbone, source, config.data.image_size, config.model.hub_handle, config.model.width_multiplier
    )
    transfer = source != "random"
    model = build_classifier(
        backbone, num_classes, config.data.image_size, config.model.dropout, backbone_in_inference_mode=transfer
    )
    return model, backbone


def evaluate_splits(model, eval_datasets, class_names):
    results = {}
    for split, ds in eval_datasets.items():
        probabilities, labels = train.predict_dataset(model, ds)
        results[split] = metrics.classification_report(labels, probabilities.argmax(-1), class_names)
    return results


# ## The lesson


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)  # weights, dropout and augmentation draws
    train.set_mixed_precision(config.train.mixed_precision)
    strategy = train.get_strategy(config.train.strategy)
    data = config.data
    batch_size = train.global_batch_size(data.batch_size, strategy)  # data.batch_size is per replica

    with timings("data"):
        splits, sizes, class_names, data_summary = load_splits(data, checkpoints)
        pipelines = {
            split: images.image_dataset(
                pairs, batch_size, training=split == "train", seed=data.seed, augment=data.augment,
                cache_file=images.cache_file(sizes[split], data.image_size, checkpoints, split),
            )
            for split, pairs in splits.items()
        }
        # Evaluation reads validation and test from the same cached pipelines; train again, unaugmented.
        eval_datasets = {**pipelines, "train": images.image_dataset(
            splits["train"], batch_size, training=False, seed=data.seed,
            cache_file=images.cache_file(sizes["train"], data.image_size, checkpoints, "train_evaluation"),
        )}
    print(f"Data: {data_summary['source']}, {len(class_names)} classes, split sizes {sizes}, "
          f"{len(data_summary['skipped'])} file(s) skipped.")

    histories, results = {}, {}
    # Stage 1, feature extraction: the pretrained backbone is frozen; only the head learns.
    with timings("train_frozen"), train.model_scope(strategy):
        model, backbone = make_classifier(config, len(class_names), config.model.source)
        backbone.features.trainable = False
        train.compile_classifier(model, config.train.feature_learning_rate, strategy)
        histories["frozen"] = train.fit_stage(
            model, pipelines["train"], pipelines["validation"], config.train.feature_epochs,
            os.path.join(checkpoints, "frozen"), config.train.early_stopping_patience, strategy,
        )
    results["frozen"] = evaluate_splits(model, eval_datasets, class_names)
    frozen_weights = os.path.join(checkpoints, "frozen", "final.weights.h5")

    # Stage 2, fine-tuning: the top layers learn too, slowly; batch norm stays in inference mode.
    if config.train.fine_tune_epochs:
        with timings("train_fine_tuned"), train.model_scope(strategy):
            backbone.fine_tune_top(config.train.fine_tune_layers)
            train.compile_classifier(model, config.train.fine_tune_learning_rate, strategy)
            histories["fine_tuned"] = train.fit_stage(
                model, pipelines["train"], pipelines["validation"], config.train.fine_tune_epochs,
                os.path.join(checkpoints, "fine_tuned"), config.train.early_stopping_patience, strategy,
            )
        results["fine_tuned"] = evaluate_splits(model, eval_datasets, class_names)

    # The baseline: the same architecture from random weights, all of it trained.
    if config.train.scratch_epochs:
        with timings("train_scratch"), train.model_scope(strategy):
            scratch, _ = make_classifier(config, len(class_names), "random")
            train.compile_classifier(scratch, config.train.scratch_learning_rate, strategy)
            histories["scratch"] = train.fit_stage(
                scratch, pipelines["train"], pipelines["validation"], config.train.scratch_epochs,
                os.path.join(checkpoints, "scratch"), config.train.early_stopping_patience, strategy,
            )
        results["scratch"] = evaluate_splits(scratch, eval_datasets, class_names)

    # Export the better transfer model, chosen on validation (never test) accuracy.
    chosen = max(
        (name for name in ("frozen", "fine_tuned") if name in results),
        key=lambda name: results[name]["validation"]["accuracy"],
    )
    if chosen == "frozen":
        model.load_weights(frozen_weights)
    with timings("export"):
        test_images, test_labels = images.load_array(eval_datasets["test"])
        representative, _ = images.load_array(eval_datasets["train"].unbatch().take(config.export.representative_images).batch(64))
        export_metrics = export.export_classifier(
            model, run_dir, class_names, representative, test_images, test_labels,
            config.export.max_quantized_accuracy_drop,
        )

    report = {
        "lesson": "crop-disease",
        "config": dataclasses.asdict(config),
        "data": {**data_summary, "class_names": class_names},
        "backbone": {"name": config.model.backbone, "source": backbone.source, "pretrained": backbone.pretrained},
        "note": _honesty_note(backbone, data_summary),
        "distribution": train.describe_strategy(strategy, data.batch_size),
        "metrics": results,
        "exported_variant": chosen,
        "export": export_metrics,
        "timings_seconds": dict(timings),
    }
    stage_starts = {"frozen": 1, "fine_tuned": len(histories["frozen"]["loss"]) + 1, "scratch": 1}
    viz.plot_training_curves(
        {name: (stage_starts[name], history) for name, history in histories.items()},
        os.path.join(run_dir, "training_curves.png"), "crop-disease: frozen, then fine-tuned, vs scratch",
    )
    viz.plot_confusion_matrix(
        results[chosen]["test"]["confusion_matrix"], class_names, os.path.join(run_dir, "confusion_matrix.png"),
        f"{chosen} model, test split",
    )
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def _honesty_note(backbone, data_summary):
    notes = []
    if not backbone.pretrained:
        notes.append("The backbone is randomly initialised, not pretrained: these figures show that the "
                     "pipeline works, not what transfer learning achieves.")
    if data_summary.get("synthetic"):
        notes.append("The data is the embedded synthetic image set, not real images.")
    return " ".join(notes)


def summary_markdown(report):
    lines = [
        "# crop-disease run",
        "",
        f"Backbone: {report['backbone']['name']} from {report['backbone']['source']} "
        f"(pretrained: {report['backbone']['pretrained']}). Data: {report['data']['source']}, "
        f"{len(report['data']['class_names'])} classes, {report['data']['num_skipped']} file(s) skipped.",
        "",
    ]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| model | train acc | val acc | test acc | test macro F1 |", "|---|---|---|---|---|"]
    for name, result in report["metrics"].items():
        lines.append(
            f"| {name} | {result['train']['accuracy']:.3f} | {result['validation']['accuracy']:.3f} | "
            f"{result['test']['accuracy']:.3f} | {result['test']['macro_f1']:.3f} |"
        )
    lines += ["", f"Exported: the {report['exported_variant']} model.", "",
              *export.classifier_table(report["export"])]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
