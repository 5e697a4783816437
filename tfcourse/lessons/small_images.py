"""
Title: Transfer learning on small images
Description: Feed 28-32 px images (CIFAR-10, MNIST) to an ImageNet backbone, upsampled inside the
model, and compare with the same backbone at the images' own size and with a small CNN trained
from scratch, all on a deliberately small labelled training set.

    tfcourse run small-images            # CIFAR-10 from TFDS, MobileNetV2 with keras.applications ImageNet weights
    tfcourse run small-images --smoke    # synthetic 28x28 grey shapes, tiny random MobileNetV2: under a minute
    TFCOURSE_ASSETS=../shared/assets tfcourse run small-images --config configs/small-images-assets.yaml

The last one uses the 10,000 real MNIST t10k digits and a MobileNetV2 whose ImageNet weights are
imported from a quantized TFLite classifier. The three arms:
- upsampled: the image resized (bilinear) to `model.upsampled_size` inside the model, grey made RGB;
- native: the same pretrained backbone fed the image at its own size (MobileNetV2 needs at least
  32 px, so a 28 px digit is padded to 32, not resampled);
- scratch: a small CNN from random weights on the native image.
Both backbone arms train a head on the frozen backbone, then fine-tune its top layers briefly.
"""

import dataclasses
import os
import typing

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, export, metrics, runs, train, viz
from tfcourse.config import ExportConfig, TrainConfig
from tfcourse.data import images, mnist
from tfcourse.models.backbones import ARCHITECTURES, build_backbone
from tfcourse.models.classifier import build_classifier

MIN_BACKBONE_SIZE = 32  # keras.applications' MobileNetV2 and EfficientNet refuse smaller inputs

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    source: str = "tfds:cifar10"  # "tfds:NAME" (cifar10, mnist, ...), a folder of MNIST IDX files, or "synthetic"
    tfds_data_dir: str = ""  # where TFDS keeps datasets; "" is TFDS's default
    # Few labels on purpose: transfer learning earns its keep when labels are scarce.
    train_size: int = 1000
    validation_size: int = 500
    test_size: int = 2000
    batch_size: int = 32
    seed: int = 42

    def validate(self):
        for name in ("train_size", "validation_size", "test_size", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"data.{name} = {getattr(self, name)} must be at least 1.")


@dataclasses.dataclass
class ModelConfig:
    backbone: typing.Literal[tuple(ARCHITECTURES)] = "mobilenet_v2"
    source: str = "imagenet"  # imagenet | hub | random | path to .weights.h5 | path to .tflite (mobilenet_v2)
    hub_handle: str = ""  # "" is the backbone's TF Hub handle; or a local SavedModel folder
    width_multiplier: float = 1.0  # MobileNetV2 alpha, for random weights (the smoke run)
    upsampled_size: int = 96  # the upsampled arm's backbone input (MobileNetV2's smallest ImageNet size)
    dropout: float = 0.2
    scratch_filters: int = 32  # the small CNN's first block; the second has twice as many

    def validate(self):
        if self.upsampled_size < MIN_BACKBONE_SIZE:
            raise UserError(f"model.upsampled_size = {self.upsampled_size} must be at least {MIN_BACKBONE_SIZE}.")
        if self.scratch_filters < 1:
            raise UserError(f"model.scratch_filters = {self.scratch_filters} must be at least 1.")


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(feature_epochs=20, feature_learning_rate=3e-3, fine_tune_epochs=5,
                                            fine_tune_learning_rate=1e-4, scratch_epochs=30,
                                            early_stopping_patience=5))
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


SMOKE = {
    "data": {"source": "synthetic", "train_size": 96, "validation_size": 48, "test_size": 48, "batch_size": 16},
    "model": {"source": "random", "width_multiplier": 0.35, "upsampled_size": 64, "scratch_filters": 16},
    "train": {"feature_epochs": 3, "fine_tune_epochs": 1, "fine_tune_layers": 10, "scratch_epochs": 8},
    "export": {"representative_images": 16, "max_quantized_accuracy_drop": 0.3},
}

# ## The data
# Whole small-image sets fit in memory as uint8 arrays. A seeded stratified order makes any
# prefix hold the classes in (nearly) their overall proportions, so the train, validation and
# test sets are consecutive slices of it, of exactly the sizes asked for.

SYNTHETIC_CLASSES = ("ring", "square", "plus", "bar")


def synthetic_images(per_class, seed, size=28):
    """Grey 28x28 digit-like shapes (ring, square, plus, bar) of random place, size and brightness over noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels, labels = [], []
    for label, name in enumerate(SYNTHETIC_CLASSES):
        for _ in range(per_class):
            dy, dx = yy - rng.uniform(0.35, 0.65), xx - rng.uniform(0.35, 0.65)  # from a random centre
            r, w = rng.uniform(0.18, 0.3), rng.uniform(0.05, 0.09)  # size and stroke width
            if name == "ring":
                mask = np.abs(np.hypot(dy, dx) - r) < w
            elif name == "square":
                mask = np.maximum(np.abs(dy), np.abs(dx)) < r
            elif name == "plus":
                mask = ((np.abs(dy) < w) & (np.abs(dx) < r)) | ((np.abs(dx) < w) & (np.abs(dy) < r))
            else:
                mask = (np.abs(dy - dx) < w) & (np.abs(dy + dx) < 2 * r)
            image = rng.uniform(0, 60, (size, size))
            image[mask] = rng.uniform(150, 255)
            pixels.append(image)
            labels.append(label)
    return np.asarray(pixels, np.uint8)[..., None], np.asarray(labels, np.int64)


def stratified_order(labels, seed):
    """A seeded permutation of the indices in which every prefix is (nearly) stratified by class."""
    rng = np.random.default_rng(seed)
    position = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        position[members] = (np.arange(len(members)) + rng.uniform()) / len(members)  # spread over [0, 1)
    return np.argsort(position, kind="stable")


def take(labels, sizes, seed, what):
    """{name: indices}: consecutive slices of `sizes[name]` items from a stratified order of `labels`."""
    if sum(sizes.values()) > len(labels):
        raise UserError(f"{what} holds {len(labels)} images, fewer than the {sum(sizes.values())} asked for "
                        f"({', '.join(f'data.{k}_size = {v}' for k, v in sizes.items())}). Ask for fewer.")
    order, start, picked = stratified_order(labels, seed), 0, {}
    for name, size in sizes.items():
        picked[name] = np.sort(order[start : start + size])
        start += size
    return picked


def _tfds_arrays(name, split, data_dir):
    import tensorflow_datasets as tfds

    pixels, labels = images.load_array(tfds.load(name, split=split, as_supervised=True, data_dir=data_dir).batch(4096))
    return pixels, labels.astype(np.int64), tfds.builder(name, data_dir=data_dir).info.features["label"].names


def load_splits(data):
    """-> ({split: (uint8 images [n, h, w, c], labels [n])}, class names, summary)."""
    sizes = {"train": data.train_size, "validation": data.validation_size, "test": data.test_size}
    if data.source.startswith("tfds:"):
        # Train and validation come from the dataset's train split, test from its test split.
        name, data_dir = data.source[5:], data.tfds_data_dir or None
        train_pool, train_labels, class_names = _tfds_arrays(name, "train", data_dir)
        test_pool, test_labels, _ = _tfds_arrays(name, "test", data_dir)
        fit_indices = take(train_labels, {"train": sizes["train"], "validation": sizes["validation"]}, data.seed,
                           f"{data.source} train split")
        test_indices = take(test_labels, {"test": sizes["test"]}, data.seed, f"{data.source} test split")["test"]
        arrays = {split: (train_pool[idx], train_labels[idx]) for split, idx in fit_indices.items()}
        arrays["test"] = (test_pool[test_indices], test_labels[test_indices])
        pool_sizes = {"train": len(train_labels), "test": len(test_labels)}
    else:
        if data.source == "synthetic":
            pool, labels = synthetic_images(-(-sum(sizes.values()) // len(SYNTHETIC_CLASSES)), data.seed)
            class_names = list(SYNTHETIC_CLASSES)
        else:  # a folder of IDX files (MNIST-style), [n, 28, 28] given a channel axis; one pool, cut three ways
            pool, labels = mnist.load_digits(data.source)
            pool, class_names = pool[..., None], [str(d) for d in range(int(labels.max()) + 1)]
        indices = take(labels, sizes, data.seed, repr(data.source))
        arrays = {split: (pool[idx], labels[idx]) for split, idx in indices.items()}
        pool_sizes = {"all": len(labels)}
    summary = {
        "source": data.source,
        "synthetic": data.source == "synthetic",
        "input_shape": list(arrays["train"][0].shape[1:]),
        "pool_sizes": pool_sizes,
        "split_sizes": {split: len(y) for split, (_, y) in arrays.items()},
        "per_split_per_class": {
            split: dict(zip(class_names, np.bincount(y, minlength=len(class_names)).tolist()))
            for split, (_, y) in arrays.items()
        },
        "num_skipped": 0,  # arrays, not files: nothing can fail to decode
        "skipped": [],
    }
    return arrays, class_names, summary


# ## The models
# All three take the raw uint8 small image, so each exports as is. The backbone arms differ only
# in what the adapter inside does before the backbone: upsample, or pad to the backbone minimum.


def native_backbone_size(input_shape):
    return max(MIN_BACKBONE_SIZE, input_shape[0], input_shape[1])


def make_backbone_classifier(config, input_shape, num_classes, image_size, fit, source):
    backbone = build_backbone(config.model.backbone, source, image_size, config.model.hub_handle,
                              config.model.width_multiplier)
    model = build_classifier(backbone, num_classes, image_size, config.model.dropout,
                             backbone_in_inference_mode=backbone.pretrained, input_shape=input_shape, fit=fit)
    return model, backbone


def build_small_cnn(input_shape, num_classes, filters=32, dropout=0.3):
    """The baseline: two blocks of two 3x3 convolutions and max pooling, then a softmax layer."""
    inputs = keras.Input(input_shape, dtype="uint8", name="images")
    x = keras.layers.Rescaling(1 / 255.0, name="rescaling")(inputs)
    for block, width in enumerate((filters, 2 * filters)):
        for i in range(2):
            x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{block}_conv{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def evaluate_splits(model, datasets, class_names):
    results = {}
    for split in ("validation", "test"):
        probabilities, labels = train.predict_dataset(model, datasets[split])
        results[split] = metrics.classification_report(labels, probabilities.argmax(-1), class_names)
    return results


def train_stage(name, model, pipelines, epochs, learning_rate, checkpoints, patience, strategy, timings):
    """Compiles under the strategy and trains one stage; -> (history, its model facts).

    Seconds per epoch are wall-clock, the first epoch's tracing and the validation pass included.
    """
    with timings("train_" + name), train.model_scope(strategy):
        train.compile_classifier(model, learning_rate, strategy)
        history = train.fit_stage(model, pipelines["train"], pipelines["validation"], epochs,
                                  os.path.join(checkpoints, name), patience, strategy)
    epochs_run = len(history["loss"])
    facts = {
        "parameters": model.count_params(),
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "epochs": epochs_run,
        "seconds_per_epoch": round(timings["train_" + name] / max(epochs_run, 1), 2),
        "weights": os.path.join(checkpoints, name, "final.weights.h5"),
    }
    return history, facts


# ## The lesson


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    train.set_mixed_precision(config.train.mixed_precision)
    strategy = train.get_strategy(config.train.strategy)
    data, cfg_train = config.data, config.train

    with timings("data"):
        arrays, class_names, data_summary = load_splits(data)
        pipelines = {
            split: images.image_dataset(tf.data.Dataset.from_tensor_slices(pair),
                                        train.global_batch_size(data.batch_size, strategy),  # per replica x replicas
                                        training=split == "train", seed=data.seed)
            for split, pair in arrays.items()
        }
    input_shape = tuple(data_summary["input_shape"])
    native_size = native_backbone_size(input_shape)
    print(f"Data: {data.source}, {len(class_names)} classes, {input_shape} images, split sizes "
          f"{data_summary['split_sizes']}.")

    # Both backbone arms: frozen backbone, head trained; then the top layers fine-tuned slowly.
    arms = {"upsampled": (config.model.upsampled_size, "resize"), "native": (native_size, "pad")}
    models, facts, histories, results, backbones = {}, {}, {}, {}, {}
    for arm, (size, fit) in arms.items():
        with train.model_scope(strategy):
            model, backbone = make_backbone_classifier(config, input_shape, len(class_names), size, fit,
                                                       config.model.source)
            backbone.features.trainable = False
        backbones[arm] = backbone
        histories[arm], facts[arm] = train_stage(
            arm, model, pipelines, cfg_train.feature_epochs, cfg_train.feature_learning_rate, checkpoints,
            cfg_train.early_stopping_patience, strategy, timings)
        models[arm], results[arm] = model, evaluate_splits(model, pipelines, class_names)
        if cfg_train.fine_tune_epochs:
            tuned = arm + "_fine_tuned"
            backbone.fine_tune_top(cfg_train.fine_tune_layers)
            histories[tuned], facts[tuned] = train_stage(
                tuned, model, pipelines, cfg_train.fine_tune_epochs, cfg_train.fine_tune_learning_rate,
                checkpoints, cfg_train.early_stopping_patience, strategy, timings)
            models[tuned], results[tuned] = model, evaluate_splits(model, pipelines, class_names)

    # The baseline: a small CNN from random weights on the native image.
    if cfg_train.scratch_epochs:
        with train.model_scope(strategy):
            scratch = build_small_cnn(input_shape, len(class_names), config.model.scratch_filters)
        histories["scratch"], facts["scratch"] = train_stage(
            "scratch", scratch, pipelines, cfg_train.scratch_epochs, cfg_train.scratch_learning_rate, checkpoints,
            cfg_train.early_stopping_patience, strategy, timings)
        models["scratch"], results["scratch"] = scratch, evaluate_splits(scratch, pipelines, class_names)

    # Export the best model, chosen on validation (never test) accuracy, with that stage's weights.
    best = max(results, key=lambda name: results[name]["validation"]["accuracy"])
    best_model = models[best]
    best_model.load_weights(facts[best]["weights"])  # a frozen stage's model was fine-tuned since
    with timings("export"):
        test_images, test_labels = arrays["test"]
        spread = np.linspace(0, data.train_size - 1, min(config.export.representative_images, data.train_size))
        export_metrics = export.export_classifier(
            best_model, run_dir, class_names, arrays["train"][0][spread.astype(int)],  # int8 calibration, all classes
            test_images, test_labels, config.export.max_quantized_accuracy_drop,
        )
        tflite_input = export.TFLiteModel(os.path.join(export.run_export_dir(run_dir), "model_float32.tflite")).input
        export_metrics["tflite_input"] = {"shape": tflite_input["shape"].tolist(),
                                          "dtype": tflite_input["dtype"].__name__}

    backbone = backbones["upsampled"]
    report = {
        "lesson": "small-images",
        "config": dataclasses.asdict(config),
        "data": {**data_summary, "class_names": class_names},
        "backbone": {"name": config.model.backbone, "source": backbone.source, "pretrained": backbone.pretrained},
        "arms": {
            "upsampled": f"{input_shape} resized (bilinear) to {config.model.upsampled_size} px inside the model",
            "native": (f"{input_shape} padded to {native_size} px (the backbone's minimum is {MIN_BACKBONE_SIZE})"
                       if native_size > input_shape[0] else f"{input_shape} at its own size"),
            "scratch": f"a small CNN from random weights on {input_shape}",
        },
        "note": _honesty_note(backbone, data_summary),
        "best_per_arm": {
            arm: max((name for name in results if name.split("_fine_tuned")[0] == arm),
                     key=lambda name: results[name]["validation"]["accuracy"])
            for arm in ("upsampled", "native", "scratch") if arm in results
        },
        "models": {name: {k: v for k, v in f.items() if k != "weights"} for name, f in facts.items()},
        "metrics": results,
        "exported_variant": best,
        "export": export_metrics,
        "timings_seconds": dict(timings),
    }
    starts = {name: 1 for name in histories}
    for arm in arms:
        if arm + "_fine_tuned" in histories:
            starts[arm + "_fine_tuned"] = len(histories[arm]["loss"]) + 1
    viz.plot_training_curves({name: (starts[name], h) for name, h in histories.items()},
                             os.path.join(run_dir, "training_curves.png"),
                             "small-images: upsampled vs native-size backbone vs small CNN")
    viz.plot_confusion_matrix(results[best]["test"]["confusion_matrix"], class_names,
                              os.path.join(run_dir, "confusion_matrix.png"), f"{best} model, test split")
    plot_examples(arrays["test"], class_names, models, os.path.join(run_dir, "examples.png"))
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def plot_examples(test_arrays, class_names, models, path, count=10):
    """One test image per class (up to `count`) as the models see it: native, and after each backbone arm's adapter."""
    first_of_each_class = [int(np.flatnonzero(test_arrays[1] == label)[0]) for label in np.unique(test_arrays[1])]
    pixels, labels = test_arrays[0][first_of_each_class[:count]], test_arrays[1][first_of_each_class[:count]]
    rows = {f"native {pixels.shape[1]}x{pixels.shape[2]}": pixels}
    for arm in ("native", "upsampled"):
        if "adapter" in [layer.name for layer in models[arm].layers]:  # none where the image fits as it is
            seen = keras.ops.convert_to_numpy(models[arm].get_layer("adapter")(pixels))
            rows[f"{arm} arm {seen.shape[1]}x{seen.shape[2]}"] = seen
    viz.plot_image_rows(rows, [class_names[label] for label in labels], path,
                        "What each arm feeds its backbone (pixels shown as they are, no smoothing)")


def _honesty_note(backbone, data_summary):
    notes = []
    if not backbone.pretrained:
        notes.append("The backbone is randomly initialised, not pretrained: these figures show that the "
                     "pipeline works, not what transfer learning achieves (frozen, a random MobileNetV2 "
                     "gives near-zero features, so its frozen arms sit near chance).")
    if data_summary["synthetic"]:
        notes.append("The data is generated 28x28 grey shapes, not real images.")
    return " ".join(notes)


def summary_markdown(report):
    data = report["data"]
    lines = [
        "# small-images run",
        "",
        f"Backbone: {report['backbone']['name']} from {report['backbone']['source']} "
        f"(pretrained: {report['backbone']['pretrained']}). Data: {data['source']}, {len(data['class_names'])} "
        f"classes, {tuple(data['input_shape'])} images; split sizes {data['split_sizes']} "
        f"(from {data['pool_sizes']}).",
        "",
    ]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += [f"- **{arm}**: {text}" for arm, text in report["arms"].items()] + [""]
    lines += ["Test accuracy per arm (its better stage on validation): " + ", ".join(
        f"{arm} {report['metrics'][name]['test']['accuracy']:.3f} ({name})"
        for arm, name in report["best_per_arm"].items()) + ".", ""]
    lines += ["| model | val acc | val macro F1 | test acc | test macro F1 | parameters | trainable | epochs | s / epoch |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, result in report["metrics"].items():
        m = report["models"][name]
        lines.append(
            f"| {name} | {result['validation']['accuracy']:.3f} | {result['validation']['macro_f1']:.3f} | "
            f"{result['test']['accuracy']:.3f} | {result['test']['macro_f1']:.3f} | {m['parameters']:,} | "
            f"{m['trainable_parameters']:,} | {m['epochs']} | {m['seconds_per_epoch']} |"
        )
    tflite_input = report["export"]["tflite_input"]
    lines += ["", f"Exported (best on validation): the {report['exported_variant']} model; the TFLite model takes "
              f"{tflite_input['dtype']} {tflite_input['shape']}.", ""] + export.classifier_table(report["export"])
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
