"""
Title: Single-object localisation: a class and a box from one pretrained backbone
Description: One object per image is both classified and located. A pretrained backbone's feature
map feeds two heads, class probabilities and a box; the loss is class cross-entropy plus a
weighted generalised-IoU box loss. Reports mean IoU, the share of boxes with IoU >= 0.5, class
accuracy and a grid of predicted and true boxes; exports a SavedModel and a float TFLite model.

    tfcourse run localization --set data.source=PATH/TO/VOC_FOLDER    # your own images, one box each
    tfcourse run localization --smoke    # shapes pasted on textures, a tiny random model: a minute on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run localization --config configs/localization-assets.yaml

The data is a Pascal VOC-style folder (JPEGImages/ + Annotations/*.xml, see tfcourse.data.boxes),
or is written as one: "pasted" pastes objects photographed on black (PlantVillage's segmented
leaves) at random scales and positions onto photos, so every box is known exactly. The last
command does that with the assets' apple leaves and BSDS500 photos and a MobileNetV2 whose
ImageNet weights are imported from a quantized TFLite classifier: a real backbone, offline.

The box is predicted as normalised [x_min, y_min, x_max, y_max] (tfcourse.metrics.detection's
"xyxy"), made from a sigmoid centre and a sigmoid half-size, so it always has x_max >= x_min.
"""

import dataclasses
import os
import shutil
import typing

import keras
import keras_cv
import numpy as np
import tensorflow as tf

from tfcourse import UserError, export, metrics, runs, train, viz
from tfcourse.data import boxes, images
from tfcourse.models.backbones import ARCHITECTURES, build_backbone

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    source: str = "pasted"  # "pasted" (objects onto backgrounds), "synthetic" (shapes, smoke), or a VOC folder
    objects: str = ""  # "pasted": a folder of class folders of objects on a black background
    backgrounds: str = ""  # "pasted": a folder of photos to paste them onto
    pastes_per_object: int = 4  # training images per training object; validation and test paste each object
    evaluation_pastes_per_object: int = 2  # ... this many times
    scale_min: float = 0.35  # pasted object's longest side over the background's shortest side
    scale_max: float = 0.8
    mask_threshold: int = 30  # brightness above which a pixel of an object photo is object
    image_size: int = 160
    batch_size: int = 32
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 42
    augment: bool = True  # random left-right flips, boxes flipped with them
    skip_bad_files: bool = True  # false: an unusable image or annotation stops the run

    def validate(self):
        if self.image_size < 64 or self.image_size % 32:
            raise UserError(f"data.image_size = {self.image_size}: use a multiple of 32, at least 64 (the "
                            "box head reads the backbone's stride-16 map).")
        if min(self.pastes_per_object, self.evaluation_pastes_per_object, self.batch_size) < 1:
            raise UserError("data.pastes_per_object, data.evaluation_pastes_per_object and data.batch_size must be >= 1.")
        if not 0 < self.scale_min <= self.scale_max <= 1:
            raise UserError(f"data.scale_min/scale_max = {self.scale_min}/{self.scale_max}: need 0 < min <= max <= 1.")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise UserError(f"data.{name} = {getattr(self, name)} must be between 0 and 0.5.")


@dataclasses.dataclass
class ModelConfig:
    backbone: typing.Literal[tuple(ARCHITECTURES)] = "mobilenet_v2"
    source: str = "imagenet"  # imagenet | random | path to .weights.h5 | path to .tflite (not hub: see feature_maps)
    width_multiplier: float = 1.0  # MobileNetV2 alpha, for random weights (the smoke run)
    box_channels: int = 64  # convolutions over the stride-16 feature map before the box head
    box_units: int = 256
    dropout: float = 0.2  # class head only


@dataclasses.dataclass
class TrainConfig:
    strategy: typing.Literal["auto", "default", "mirrored", "tpu", "multi_worker"] = "auto"
    feature_epochs: int = 30  # stage 1: backbone frozen
    feature_learning_rate: float = 1e-3
    fine_tune_epochs: int = 10  # stage 2: top layers unfrozen, batch norm kept in inference mode
    fine_tune_layers: int = 30
    fine_tune_learning_rate: float = 1e-4
    box_loss_weight: float = 2.0  # total loss = class cross-entropy + weight x (1 - GIoU)
    early_stopping_patience: int = 6

    def validate(self):
        if self.feature_epochs < 1 or self.fine_tune_epochs < 0 or self.fine_tune_layers < 0:
            raise UserError("train.feature_epochs must be >= 1, fine_tune_epochs and fine_tune_layers >= 0.")
        if min(self.feature_learning_rate, self.fine_tune_learning_rate, self.box_loss_weight) <= 0:
            raise UserError("train learning rates and box_loss_weight must be positive.")


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


SMOKE = {
    "data": {"source": "synthetic", "image_size": 96, "batch_size": 16, "pastes_per_object": 3},
    "model": {"backbone": "mobilenet_v2", "source": "random", "width_multiplier": 0.35, "box_units": 64},
    "train": {"feature_epochs": 4, "fine_tune_epochs": 0, "early_stopping_patience": 10},
}

# ## The data
# Whatever the source, the lesson reads a VOC folder. Pasted data is written as one first, its
# splits drawn so that no object photo and no background photo is in two splits.


def write_pasted_data(data, root):
    """Writes the pasted (or, for "synthetic", shapes-on-textures) VOC folder; -> (class names, summary)."""
    shutil.rmtree(root, ignore_errors=True)  # regenerated from the seed: the same files every time
    skipped = []
    if data.source == "synthetic":
        objects, labels = boxes.synthetic_shapes(per_class=12, seed=data.seed)
        class_names = list(boxes.SHAPE_CLASSES)
        backgrounds = boxes.textured_backgrounds(30, seed=data.seed)
    else:
        if not data.objects or not data.backgrounds:
            raise UserError("data.source = 'pasted' needs data.objects (a folder of class folders of objects on "
                            "black) and data.backgrounds (a folder of photos); see configs/localization-assets.yaml, "
                            "or set data.source to a VOC-style folder of your own.")
        objects, labels, class_names, backgrounds, skipped = boxes.read_objects_and_backgrounds(
            data.objects, data.backgrounds, data.mask_threshold, data.skip_bad_files)
    object_splits = images.stratified_split(labels, data.validation_fraction, data.test_fraction, data.seed)
    background_splits = images.stratified_split(np.zeros(len(backgrounds), int), data.validation_fraction,
                                                data.test_fraction, data.seed)
    pastes = {"train": data.pastes_per_object, "validation": data.evaluation_pastes_per_object,
              "test": data.evaluation_pastes_per_object}
    counts = boxes.write_pasted_voc(root, objects, labels, class_names, backgrounds, object_splits, background_splits,
                                    pastes, data.seed, (data.scale_min, data.scale_max))
    summary = {
        "objects": len(objects), "backgrounds": len(backgrounds),
        "objects_per_split": {s: len(i) for s, i in object_splits.items()},
        "backgrounds_per_split": {s: len(i) for s, i in background_splits.items()},
        "images_per_split": counts, "source_skipped": skipped,
    }
    return class_names, summary


def load_data(data, work_dir):
    """-> ({split: unbatched (image, {"class", "box"}) dataset}, class names, summary)."""
    pasted = data.source in ("pasted", "synthetic")
    summary = {"source": data.source, "synthetic": data.source == "synthetic"}
    class_names = None
    root = data.source
    if pasted:
        root = os.path.join(work_dir, "voc")
        class_names, summary["pasting"] = write_pasted_data(data, root)
    folder = boxes.read_voc_folder(root, class_names, data.skip_bad_files)
    splits = folder.splits or images.stratified_split(folder.labels, data.validation_fraction, data.test_fraction,
                                                      data.seed)
    if folder.splits:  # images its split files do not list are left out, and counted
        summary["split_from"] = "ImageSets/Main"
        summary["not_in_any_split"] = len(folder.files) - sum(len(i) for i in splits.values())
    for name, indices in splits.items():
        if not len(indices):
            raise UserError(f"The {name} split of {root!r} has no usable image.")
    skipped = folder.skipped + (summary.get("pasting", {}).get("source_skipped", []))
    summary.update(
        voc_folder=root, num_images=len(folder.files), split_sizes={s: len(i) for s, i in splits.items()},
        num_skipped=len(skipped), skipped=skipped,
    )
    datasets = {s: boxes.box_dataset([folder.files[i] for i in idx], folder.boxes[idx], folder.labels[idx],
                                     data.image_size) for s, idx in splits.items()}
    return datasets, folder.class_names, summary


def batched(pairs, data, batch_size, training):
    ds = pairs.cache()
    if training:
        ds = ds.shuffle(10_000, seed=data.seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and data.augment:
        ds = ds.map(boxes.random_horizontal_flip, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# ## The model
# The backbone's pooled vector says what, not where. The class head pools the last feature map
# (stride 32); the box head reads a finer one (stride 16: 10x10 at 160 px), a strided 3x3
# convolution and a 1x1 one over it, flattened so each position keeps its place. Measured on the
# assets' validation split with the backbone frozen, the stride-16 map gave mean IoU 0.63 where
# the stride-32 map gave 0.48. No dropout in the box head: it blurs a regression's precision.


def feature_maps(backbone, image_size):
    """A model from the backbone's input to its (stride-16, stride-32) feature maps, without the pooling."""
    model = backbone.features
    if not isinstance(model, keras.Model) or not isinstance(model.layers[-1], keras.layers.GlobalAveragePooling2D):
        raise UserError(f"model.source {backbone.source!r}: a box needs the backbone's feature maps, and this backbone "
                        "gives only a pooled vector (TF Hub feature-vector modules do). Use imagenet, random, "
                        "a .weights.h5 or a .tflite source.")
    side = -(-image_size // 16)
    stride_16 = [layer for layer in model.layers[:-1] if tuple(layer.output.shape[1:3]) == (side, side)][-1]
    return keras.Model(model.input, [stride_16.output, model.layers[-2].output], name=model.name + "_feature_maps")


def build_localizer(config, num_classes):
    """uint8 images -> {"class": probabilities, "box": normalised x_min, y_min, x_max, y_max}; -> (model, backbone)."""
    m, size = config.model, config.data.image_size
    backbone = build_backbone(m.backbone, m.source, size, width_multiplier=m.width_multiplier)
    backbone = dataclasses.replace(backbone, features=feature_maps(backbone, size))  # fine_tune_top acts on these
    images_in = keras.Input((size, size, 3), dtype="uint8", name="images")
    fine, coarse = backbone.features(backbone.rescaling(images_in), training=False if backbone.pretrained else None)
    pooled = keras.layers.Dropout(m.dropout, name="class_dropout")(keras.layers.GlobalAveragePooling2D(name="pool")(coarse))
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="class")(pooled)
    b = keras.layers.Conv2D(m.box_channels, 3, strides=2, padding="same", activation="relu", name="box_conv")(fine)
    b = keras.layers.Conv2D(m.box_channels, 1, activation="relu", name="box_reduce")(b)
    b = keras.layers.Dense(m.box_units, activation="relu", name="box_hidden")(keras.layers.Flatten(name="box_flatten")(b))
    centre = keras.layers.Dense(2, activation="sigmoid", name="box_centre")(b)
    half_size = keras.layers.Rescaling(0.5, name="box_half_size")(keras.layers.Dense(2, activation="sigmoid", name="box_size")(b))
    box = keras.layers.Concatenate(name="box")([keras.layers.Subtract(name="box_min")([centre, half_size]),
                                                keras.layers.Add(name="box_max")([centre, half_size])])
    return keras.Model(images_in, {"class": probabilities, "box": box}, name="localizer"), backbone


def compile_localizer(model, learning_rate, box_loss_weight):
    # KerasCV's GIoU loss works with Keras 3 here (checked: fit, .keras reload, export); "rel_xyxy" is our box order.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={"class": "sparse_categorical_crossentropy", "box": keras_cv.losses.GIoULoss(bounding_box_format="rel_xyxy")},
        loss_weights={"class": 1.0, "box": box_loss_weight},
        metrics={"class": "accuracy"},
    )


# ## Evaluation


def predict(model, ds):
    """(predicted {"class", "box"}, true {"class", "box"}) over a batched dataset, as arrays, and the images."""
    predicted, true, pixels = {"class": [], "box": []}, {"class": [], "box": []}, []
    for x, y in ds:
        outputs = model.predict(x, verbose=0)  # not predict_on_batch: see train.predict_dataset
        for key in predicted:
            predicted[key].append(np.asarray(outputs[key]))
            true[key].append(y[key].numpy())
        pixels.append(x.numpy())
    return ({k: np.concatenate(v) for k, v in predicted.items()}, {k: np.concatenate(v) for k, v in true.items()},
            np.concatenate(pixels))


def paired_iou(predicted_boxes, true_boxes):
    """IoU of each predicted box with its own true box (the diagonal of metrics.box_iou)."""
    return np.array([metrics.box_iou(p[None], t[None])[0, 0] for p, t in zip(predicted_boxes, true_boxes)])


def localization_metrics(predicted, true, class_names):
    ious = paired_iou(predicted["box"], true["box"])
    report = metrics.classification_report(true["class"], predicted["class"].argmax(-1), class_names)
    return {"mean_iou": float(ious.mean()), "share_iou_at_least_0.5": float(np.mean(ious >= 0.5)),
            "class_accuracy": report["accuracy"], "both_right": float(np.mean((ious >= 0.5) &
                                                                              (predicted["class"].argmax(-1) == true["class"]))),
            "count": int(len(ious)), "classification": report}


def evaluate(model, eval_datasets, class_names):
    return {split: localization_metrics(*predict(model, ds)[:2], class_names) for split, ds in eval_datasets.items()}


# ## The lesson


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    strategy = train.get_strategy(config.train.strategy)
    data, t = config.data, config.train

    with timings("data"):
        splits, class_names, data_summary = load_data(data, checkpoints)
        batch_size = train.global_batch_size(data.batch_size, strategy)  # data.batch_size is per replica
        pipelines = {s: batched(pairs, data, batch_size, training=s == "train") for s, pairs in splits.items()}
        eval_datasets = {**pipelines, "train": batched(splits["train"], data, batch_size, training=False)}
    print(f"Data: {data_summary['voc_folder']}, {len(class_names)} classes, split sizes {data_summary['split_sizes']}, "
          f"{data_summary['num_skipped']} file(s) skipped.")

    histories, results = {}, {}
    # Stage 1: the pretrained backbone frozen (a random one trains whole); both heads learn.
    with timings("train_stage_1"), train.model_scope(strategy):
        model, backbone = build_localizer(config, len(class_names))
        backbone.features.trainable = not backbone.pretrained  # a random backbone must learn from the start
        compile_localizer(model, train.scaled_learning_rate(t.feature_learning_rate, strategy), t.box_loss_weight)
        first = "frozen" if backbone.pretrained else "scratch"
        histories[first] = train.fit_stage(model, pipelines["train"], pipelines["validation"], t.feature_epochs,
                                           os.path.join(checkpoints, first), t.early_stopping_patience, strategy)
    results[first] = evaluate(model, eval_datasets, class_names)

    # Stage 2: the top layers learn too, slowly; batch norm stays in inference mode.
    if t.fine_tune_epochs:
        with timings("train_fine_tuned"), train.model_scope(strategy):
            if backbone.pretrained:  # a random backbone is already trained whole
                backbone.fine_tune_top(t.fine_tune_layers)
            compile_localizer(model, train.scaled_learning_rate(t.fine_tune_learning_rate, strategy), t.box_loss_weight)
            histories["fine_tuned"] = train.fit_stage(model, pipelines["train"], pipelines["validation"],
                                                      t.fine_tune_epochs, os.path.join(checkpoints, "fine_tuned"),
                                                      t.early_stopping_patience, strategy)
        results["fine_tuned"] = evaluate(model, eval_datasets, class_names)

    # Export the better stage, chosen on validation mean IoU (never test).
    chosen = max(results, key=lambda name: results[name]["validation"]["mean_iou"])
    if chosen == first and "fine_tuned" in results:
        model.load_weights(os.path.join(checkpoints, first, "final.weights.h5"))
    predicted, true, test_images = predict(model, eval_datasets["test"])
    with timings("export"):
        def score(outputs):
            scored = localization_metrics(outputs, true, class_names)
            return {k: scored[k] for k in ("mean_iou", "share_iou_at_least_0.5", "class_accuracy")}

        export_metrics = export.export_named_outputs(model, run_dir, test_images, class_names, score)

    report = {
        "lesson": "localization",
        "config": dataclasses.asdict(config),
        "data": {**data_summary, "class_names": class_names},
        "backbone": {"name": config.model.backbone, "source": backbone.source, "pretrained": backbone.pretrained},
        "box_format": "normalised x_min, y_min, x_max, y_max",
        "note": _honesty_note(backbone, data_summary),
        "metrics": results,
        "exported_variant": chosen,
        "export": export_metrics,
        "timings_seconds": dict(timings),
    }
    stage_starts = {first: 1, "fine_tuned": len(histories[first]["loss"]) + 1}
    viz.plot_training_curves({name: (stage_starts[name], h) for name, h in histories.items()},
                             os.path.join(run_dir, "training_curves.png"), f"localization: {first}, then fine-tuned",
                             metrics=("loss", "box_loss", "class_accuracy"))
    ious = paired_iou(predicted["box"], true["box"])
    shown = np.unique(np.linspace(0, len(test_images) - 1, min(16, len(test_images))).astype(int))  # every class
    captions = [f"{class_names[predicted['class'][i].argmax()]} (true {class_names[true['class'][i]]})\nIoU {ious[i]:.2f}"
                for i in shown]
    viz.plot_box_grid(test_images[shown], true["box"][shown], predicted["box"][shown], captions,
                      os.path.join(run_dir, "boxes.png"), f"{chosen} model, test split: true (green), predicted (red)")
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def predict_files(run_dir, files, top_k=3, fmt="saved_model"):
    """`tfcourse predict` on a localization run: the top-k classes and the box (x_min, y_min, x_max,
    y_max, as fractions of the image) of each image file. Only use runs you trust."""
    predict, image_size, class_names = export.load_named_outputs(run_dir, fmt)
    results = []
    for path in files:
        outputs = predict(images.read_image_file(path, image_size)[None])
        probabilities, box = np.asarray(outputs["class"])[0], np.asarray(outputs["box"])[0]
        results.append({"file": path, "box_xyxy": [round(float(v), 4) for v in box],
                        "top_k": export.top_k_classes(probabilities, class_names, top_k)})
    return results


def _honesty_note(backbone, data_summary):
    notes = []
    if not backbone.pretrained:
        notes.append("The backbone is randomly initialised and trains from nothing: its boxes and classes show "
                     "that the pipeline runs end to end, not how well a pretrained backbone localises.")
    if data_summary.get("synthetic"):
        notes.append("The data is generated shapes pasted on generated textures, not real images.")
    elif data_summary["source"] == "pasted":
        notes.append("The images are real object photos pasted onto real photos: the boxes are exact, but "
                     "the scenes are composites, easier than natural photos.")
    return " ".join(notes)


def summary_markdown(report):
    data = report["data"]
    lines = [
        "# localization run", "",
        f"Backbone: {report['backbone']['name']} from {report['backbone']['source']} "
        f"(pretrained: {report['backbone']['pretrained']}). Data: {data['source']} ({data['voc_folder']}), "
        f"{len(data['class_names'])} classes, split sizes {data['split_sizes']}, {data['num_skipped']} file(s) skipped.", "",
    ]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| model | split | mean IoU | IoU >= 0.5 | class acc | both right |", "|---|---|---|---|---|---|"]
    for name, result in report["metrics"].items():
        for split, r in result.items():
            lines.append(f"| {name} | {split} | {r['mean_iou']:.3f} | {r['share_iou_at_least_0.5']:.3f} | "
                         f"{r['class_accuracy']:.3f} | {r['both_right']:.3f} |")
    lines += ["", f"Exported: the {report['exported_variant']} model.", "",
              "| format | test mean IoU | test class acc | max abs diff vs Keras (box, class) | size (KB) |",
              "|---|---|---|---|---|"]
    for fmt in ("saved_model", "float32"):
        m = report["export"][fmt]
        lines.append(f"| {fmt} | {m['mean_iou']:.3f} | {m['class_accuracy']:.3f} | {m['max_abs_diff']['box']:.1e}, "
                     f"{m['max_abs_diff']['class']:.1e} | {m['size_bytes'] / 1024:.0f} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
