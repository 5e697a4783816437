"""
Title: What did the model look at? Saliency, SmoothGrad, Grad-CAM and activations
Description: Explain any image lesson's classifier with vanilla-gradient saliency, SmoothGrad,
Grad-CAM and activation grids, and check the methods on a known answer: a model trained on images
in which only a small object at a known place decides the class must look at that object.

    tfcourse run interpret                # trains the known-answer model, explains it, measures
    tfcourse run interpret --smoke        # the same, smaller: well under a minute on a CPU
    tfcourse run interpret --set explain.run_dir=saved_models/crop-disease --set explain.images=[leaf.jpg]
    tfcourse explain saved_models/crop-disease leaf.jpg more_leaves/ --layers out_relu

The known answer: each image is a random texture with a few distractors (squares and circles of
any colour but white, on dark tiles, anywhere) and one object, a white square or circle on a dark
tile, whose shape alone decides the class. A model that classifies these images well can only do
it by looking at the white object, so most of each saliency map's mass must fall inside its tile
(the box: the tile holds the shape's outline and the dark pixels around it that make the
outline visible); a map spread evenly would put box area / image area there.

The methods live in `tfcourse/explain.py`; explaining a run needs its Keras model, which
`explain.load_run` reads in Keras' safe mode. Explain only run directories you trust.
"""

import dataclasses
import os
import typing

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, explain, export, runs, train, viz
from tfcourse.models.backbones import Backbone
from tfcourse.models.classifier import build_classifier

# ## Configuration


@dataclasses.dataclass
class ExplainConfig:
    run_dir: str = ""  # a run of any image lesson; "" trains the known-answer model below and explains that
    images: list = dataclasses.field(default_factory=list)  # image files or folders, to explain run_dir's model
    methods: list = dataclasses.field(default_factory=lambda: list(explain.METHODS))
    layers: list = dataclasses.field(default_factory=list)  # activation grids; [] is the Grad-CAM layer
    gradcam_layer: str = ""  # "" is the last 4-D feature map before global pooling
    smoothgrad_samples: int = 25
    smoothgrad_noise: float = 0.15  # noise std as a share of the image's value range
    pictures: int = 6  # known answer: how many test images get PNGs (all of them are measured)

    def validate(self):
        unknown = sorted(set(self.methods) - set(explain.METHODS))
        if unknown or not self.methods:
            raise UserError(f"explain.methods = {self.methods}: choose one or more of {list(explain.METHODS)}.")
        if self.run_dir and not self.images:
            raise UserError("explain.run_dir is set but explain.images is empty: name the images to explain.")
        if self.smoothgrad_samples < 1 or self.smoothgrad_noise < 0:
            raise UserError("explain.smoothgrad_samples must be at least 1 and explain.smoothgrad_noise not negative.")


@dataclasses.dataclass
class KnownAnswerConfig:
    image_size: int = 48
    object_size: int = 16  # the deciding object's tile (its box) is object_size x object_size pixels
    distractors: int = 3
    train_images: int = 4000
    validation_images: int = 400
    test_images: int = 400
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 2e-3
    early_stopping_patience: int = 3
    pooling: typing.Literal["max", "avg"] = "max"  # the CNN's global pooling; see "The model"
    strategy: typing.Literal[train.STRATEGIES] = "auto"
    seed: int = 0
    min_test_accuracy: float = 0.9  # below this, the model has not learnt the answer: explanations would mean little

    def validate(self):
        if not 8 <= self.object_size <= self.image_size // 2:
            raise UserError(f"known_answer.object_size = {self.object_size} must be 8 to image_size / 2.")
        if min(self.train_images, self.validation_images, self.test_images, self.epochs) < 1:
            raise UserError("known_answer image counts and epochs must be at least 1.")


@dataclasses.dataclass
class Config:
    explain: ExplainConfig = dataclasses.field(default_factory=ExplainConfig)
    known_answer: KnownAnswerConfig = dataclasses.field(default_factory=KnownAnswerConfig)


SMOKE = {
    "explain": {"smoothgrad_samples": 10, "pictures": 3},
    "known_answer": {"image_size": 40, "object_size": 16, "train_images": 1600, "validation_images": 200,
                     "test_images": 200, "epochs": 8},
}

CLASS_NAMES = ["square", "circle"]

# ## The known-answer data
# Distractors are drawn first, the white object last, on top; so the object is always whole.


def _shape_mask(kind, top, left, size, image_size):
    yy, xx = np.mgrid[0:image_size, 0:image_size] + 0.5
    if kind == "square":
        return (yy >= top) & (yy < top + size) & (xx >= left) & (xx < left + size)
    radius = size / 2
    return (yy - top - radius) ** 2 + (xx - left - radius) ** 2 <= radius**2


def _texture(rng, image_size):
    """A smooth random background: coarse noise upsampled, in 0-110."""
    coarse = rng.uniform(0, 110, (image_size // 8, image_size // 8, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (image_size, image_size), method="bicubic").numpy()
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 110)


def _draw(image, kind, top, left, size, colour, rng):
    """A shape on a dark tile: the tile is `size` pixels wide, the shape inside it with a 2-pixel margin."""
    image[top : top + size, left : left + size] = rng.uniform(0, 30)
    image[_shape_mask(kind, top + TILE_MARGIN, left + TILE_MARGIN, size - 2 * TILE_MARGIN, len(image))] = colour


TILE_MARGIN = 2


def known_answer_images(count, image_size=48, object_size=16, distractors=3, seed=0):
    """-> (uint8 images [count, size, size, 3], labels (0 square, 1 circle), boxes [count, 4] as top, left, bottom, right).

    The box is the deciding object's tile, so the edges that tell its shape lie inside it.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((count, image_size, image_size, 3), np.uint8)
    labels = rng.integers(0, 2, count)
    boxes = np.zeros((count, 4), int)
    for i in range(count):
        image = _texture(rng, image_size)
        for _ in range(distractors):
            size = rng.integers(object_size // 2, object_size + 1)
            colour = np.zeros(3)
            colour[rng.integers(0, 3)] = rng.uniform(170, 255)  # one strong channel: coloured, never white
            _draw(image, rng.choice(CLASS_NAMES), *rng.integers(0, image_size - size + 1, 2), size, colour, rng)
        top, left = rng.integers(0, image_size - object_size + 1, 2)
        _draw(image, CLASS_NAMES[labels[i]], top, left, object_size, rng.uniform(220, 255), rng)
        images[i] = np.round(image).astype(np.uint8)
        boxes[i] = top, left, top + object_size, left + object_size
    return images, labels, boxes


# ## The model
# The image lessons' layout: uint8 images in, a Rescaling, a nested backbone model, a softmax
# head, built by the same `build_classifier`. The backbone is a small CNN: the point here is the
# explanation, and a small model learns this task in seconds on a CPU. Its last feature map keeps
# half the image's resolution, so Grad-CAM can be sharp enough to be checked against a box.
#
# Global max pooling (the default) lets the score depend on each channel's strongest response
# only, so gradients flow back to where the object is. Global average pooling (as in the
# pretrained backbones) passes gradient to every position, and the gradient maps spread: in the
# smoke run, `--set known_answer.pooling=avg` moved the share inside the box from 0.71 to 0.53
# (vanilla) and from 0.74 to 0.21 (SmoothGrad), while Grad-CAM went from 0.50 to 0.57.


def small_cnn_backbone(image_size, pooling="max"):
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    pool = keras.layers.GlobalMaxPooling2D if pooling == "max" else keras.layers.GlobalAveragePooling2D
    model = keras.Model(inputs, pool(name="global_pool")(x), name="small_cnn")
    return Backbone(keras.layers.Rescaling(1 / 255.0, name="rescaling"), model, "random", pretrained=False)


def train_known_answer_model(config, checkpoints):
    """Trains the known-answer classifier; -> (model reloaded from best.keras, its path, history, test split)."""
    ka = config.known_answer
    splits = {}
    for offset, (split, count) in enumerate(
        (("train", ka.train_images), ("validation", ka.validation_images), ("test", ka.test_images))
    ):
        splits[split] = known_answer_images(count, ka.image_size, ka.object_size, ka.distractors, ka.seed + offset)
    datasets = {
        split: tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=ka.seed, reshuffle_each_iteration=True) if split == "train" else
        tf.data.Dataset.from_tensor_slices((x, y))
        for split, (x, y, _) in splits.items()
    }
    strategy = train.get_strategy(ka.strategy)
    batch_size = train.global_batch_size(ka.batch_size, strategy)  # ka.batch_size is per replica
    datasets = {split: ds.batch(batch_size).prefetch(tf.data.AUTOTUNE) for split, ds in datasets.items()}
    with train.model_scope(strategy):
        model = build_classifier(small_cnn_backbone(ka.image_size, ka.pooling), len(CLASS_NAMES), ka.image_size, dropout=0.1,
                                 backbone_in_inference_mode=False)
        train.compile_classifier(model, ka.learning_rate, strategy)
    stage_dir = os.path.join(checkpoints, "trained")
    history = train.fit_stage(model, datasets["train"], datasets["validation"], ka.epochs, stage_dir,
                              ka.early_stopping_patience, strategy)
    path = os.path.join(stage_dir, "best.keras")
    return explain.load_keras_model(path), path, history, splits, datasets


# ## The lesson


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.known_answer.seed)
    settings = config.explain
    out_dir = os.path.join(run_dir, "explanations")
    options = dict(methods=settings.methods, layers=settings.layers, gradcam_layer=settings.gradcam_layer or None,
                   smoothgrad_samples=settings.smoothgrad_samples, smoothgrad_noise=settings.smoothgrad_noise)

    if settings.run_dir:
        with timings("explain"):
            explained = explain.explain_files(settings.run_dir, settings.images, out_dir, **options)
        report = {"lesson": "interpret", "config": dataclasses.asdict(config), "explained": explained,
                  "note": "", "timings_seconds": dict(timings)}
        runs.write_report(run_dir, report, summary_markdown(report))
        return report

    ka = config.known_answer
    with timings("train"):
        model, model_path, history, splits, datasets = train_known_answer_model(config, checkpoints)
    test_images, test_labels, test_boxes = splits["test"]
    probabilities = model.predict(test_images, verbose=0)
    accuracy = float(np.mean(probabilities.argmax(-1) == test_labels))
    print(f"Known-answer model: test accuracy {accuracy:.3f} on {len(test_labels)} images.")

    # The same run layout as the other image lessons: `tfcourse predict` and `tfcourse explain` read it.
    with timings("export"):
        representative = splits["train"][0][:50]
        export_metrics = export.export_classifier(model, run_dir, CLASS_NAMES, representative, test_images,
                                                  test_labels, max_quantized_accuracy_drop=0.1)

    # Every test image is measured, explaining its true class; a few get pictures.
    gradcam_layer = options["gradcam_layer"] or "/".join(explain.default_feature_layer(model))
    layers = settings.layers or [gradcam_layer]
    with timings("explain"):
        maps = explain.saliency_maps(model, test_images, settings.methods, test_labels, gradcam_layer,
                                     settings.smoothgrad_samples, settings.smoothgrad_noise, ka.seed)
        shown = range(min(settings.pictures, len(test_images)))
        names = [f"test{i}_{CLASS_NAMES[test_labels[i]]}" for i in shown]
        _, pictures = explain.explain_images(model, test_images[: len(names)], names, CLASS_NAMES, out_dir,
                                             settings.methods, layers, gradcam_layer, settings.smoothgrad_samples,
                                             settings.smoothgrad_noise, ka.seed)
        for picture, box in zip(pictures, test_boxes):
            picture["box"] = box.tolist()
    shares = {method: explain.mass_inside_box(method_maps, test_boxes) for method, method_maps in maps.items()}
    chance = ka.object_size**2 / ka.image_size**2
    correct = probabilities.argmax(-1) == test_labels
    known_answer = {
        "test_accuracy": accuracy,
        "num_test_images": len(test_labels),
        "chance_share": chance,
        "mean_share_inside_box": {m: float(np.nanmean(s)) for m, s in shares.items()},
        "median_share_inside_box": {m: float(np.nanmedian(s)) for m, s in shares.items()},
        "mean_share_inside_box_correct_only": {m: float(np.nanmean(s[correct])) for m, s in shares.items()},
        "images_with_most_mass_inside_box": {m: float(np.mean(s > 0.5)) for m, s in shares.items()},
        "gradcam_layer": gradcam_layer,
    }
    viz.plot_training_curves({"known-answer CNN": (1, history)}, os.path.join(run_dir, "training_curves.png"),
                             "interpret: the known-answer CNN")
    _plot_shares(shares, chance, os.path.join(run_dir, "saliency_share_inside_box.png"))
    note = ("The model is a small CNN trained here on synthetic images whose class only the white object decides: "
            "the measured shares check the methods, they say nothing about a pretrained model.")
    if accuracy < ka.min_test_accuracy:
        note += (f" The model reached only {accuracy:.3f} test accuracy (< {ka.min_test_accuracy}): it has not "
                 "learnt the answer, so its maps need not find the object.")
    report = {
        "lesson": "interpret",
        "config": dataclasses.asdict(config),
        "data": {"class_names": CLASS_NAMES, "synthetic": True,
                 "split_sizes": {split: len(x) for split, (x, _, _) in splits.items()}},
        "note": note,
        "model_path": model_path,
        "exported_variant": "trained",
        "export": export_metrics,
        "known_answer": known_answer,
        "pictures": pictures,
        "out_dir": out_dir,
        "timings_seconds": dict(timings),
    }
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def _plot_shares(shares, chance, path):
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([s[~np.isnan(s)] for s in shares.values()], tick_labels=list(shares))
    ax.axhline(chance, color="tab:red", linestyle="--", label=f"chance ({chance:.3f})")
    ax.axhline(0.5, color="gray", linestyle=":", label="half")
    ax.set(ylabel="share of saliency mass inside the object's box", ylim=(0, 1))
    ax.legend(fontsize=8)
    viz.save_figure(figure, path)


def summary_markdown(report):
    lines = ["# interpret run", ""]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    if "explained" in report:
        e = report["explained"]
        lines += [f"Explained {len(e['images'])} image(s) with {e['model']} ({e['lesson']} run); "
                  f"{e['num_skipped']} file(s) could not be decoded. PNGs in {e['out_dir']}.", "",
                  "| image | predicted | probability |", "|---|---|---|"]
        lines += [f"| {r['name']} | {r['predicted']} | {r['probability']:.3f} |" for r in e["images"]]
    else:
        k = report["known_answer"]
        lines += [f"Known-answer CNN: test accuracy {k['test_accuracy']:.3f} on {k['num_test_images']} images. "
                  f"Grad-CAM layer: {k['gradcam_layer']}.", "",
                  f"Share of saliency mass inside the deciding object's box (chance: {k['chance_share']:.3f}):", "",
                  "| method | mean | median | mean, correct only | images > 0.5 |", "|---|---|---|---|---|"]
        for m, share in k["mean_share_inside_box"].items():
            lines.append(f"| {m} | {share:.3f} | {k['median_share_inside_box'][m]:.3f} | "
                         f"{k['mean_share_inside_box_correct_only'][m]:.3f} | {k['images_with_most_mass_inside_box'][m]:.2f} |")
        lines += ["", f"Overlays in {report['out_dir']}."]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
