"""
Title: Domain-adversarial training: MNIST to MNIST-M
Description: Train a digit classifier on labelled MNIST so that it also works on MNIST-M (digits
blended with natural photos), whose labels it never sees, with a gradient reversal layer and a
domain classifier (Ganin & Lempitsky 2015); compare with source-only and target-trained models.

    tfcourse run dann            # TFDS mnist (train split) + BSDS500 photos from a local folder
    tfcourse run dann --smoke    # synthetic glyph "digits" and textures: a minute on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run dann --config configs/dann-assets.yaml

The idea: a feature extractor feeds two heads. The label head learns digit classes from the
labelled source domain. The domain head learns to tell source from target features, but between
it and the features sits a gradient reversal layer: identity going forward, -λ times the gradient
going back. So the features are trained to *confuse* the domain head while staying useful for
labels, which makes them domain-invariant; a label head on such features transfers to the target.

Three arms share one architecture, one batch recipe (half source, half target) and one target
test set; they differ only in which half is labelled and in λ:
- source-only: source labels, λ = 0 (the domain head still learns, as a probe of how separable
  the two domains' features are, but its gradient never reaches the features);
- DANN: source labels, λ following the paper's schedule;
- target-trained: target labels, λ = 0 (the ceiling: what labelled target data would give).
"""

import dataclasses
import json
import os
import typing

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from tfcourse import UserError, export, metrics, runs, train, viz
from tfcourse.config import ExportConfig
from tfcourse.data import images as image_data
from tfcourse.data import mnist, mnist_m
from tfcourse.models.gradient_reversal import AnnealedLearningRate, GradientReversal, GradientReversalSchedule

# The paper's MNIST -> MNIST-M target accuracies (Ganin & Lempitsky 2015, Table 1), for comparison
# only: they are quoted, not computed here.
PAPER_TARGET_ACCURACY = {"source_only": 0.5225, "dann": 0.7666, "target_trained": 0.9596}
ARMS = {  # name -> (the domain whose labels train the label head, whether λ follows the schedule)
    "source_only": ("source", False),
    "dann": ("source", True),
    "target_trained": ("target", False),
}
SOURCE, TARGET = 0, 1  # domain labels

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    digits: str = "tfds:mnist"  # "tfds:NAME", a folder of MNIST IDX files, or "synthetic"
    digits_split: str = "train"  # the TFDS split read for "tfds:NAME"
    tfds_data_dir: str = ""  # "" is TFDS's default
    backgrounds: str = "BSR/BSDS500/data/images/train"  # a folder of photos, or "synthetic"
    max_digits: int = 20000  # digits used in all (0: all); each is in one domain only
    synthetic_classes: int = 4  # glyph classes of synthetic digits
    target_fraction: float = 0.5  # of the digits, the share that becomes the target domain
    validation_fraction: float = 0.1  # of each domain
    test_fraction: float = 0.2  # of each domain
    test_photo_fraction: float = 0.2  # photos kept for target test images only
    batch_size: int = 128  # half source, half target
    seed: int = 42

    def validate(self):
        if self.batch_size < 2 or self.batch_size % 2:
            raise UserError(f"data.batch_size = {self.batch_size} must be even and at least 2 (half each domain).")
        for name in ("target_fraction", "test_photo_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"data.{name} = {getattr(self, name)} must be between 0 and 1.")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise UserError(f"data.{name} = {getattr(self, name)} must be between 0 and 0.5.")
        if self.max_digits < 0:
            raise UserError(f"data.max_digits = {self.max_digits} must not be negative (0 means all).")


@dataclasses.dataclass
class ModelConfig:  # the paper's MNIST architecture
    conv_filters: int = 32  # then 1.5x as many in the second conv (32, 48 in the paper)
    label_units: int = 100  # two hidden layers of the label head
    domain_units: int = 100  # one hidden layer of the domain head


@dataclasses.dataclass
class TrainConfig:
    # no multi_worker: the gradient-reversal schedule trains through model.fit, which Keras 3 cannot
    # run multi-worker (train.fit_multi_worker covers train.fit_stage's lessons); data.batch_size is global.
    strategy: typing.Literal["auto", "default", "mirrored", "tpu"] = "auto"
    epochs: int = 30  # an epoch: one pass over the larger training pool, in half batches
    optimizer: typing.Literal["sgd", "adam"] = "sgd"  # the paper: SGD with momentum 0.9
    learning_rate: float = 0.01  # μ0 of μ_p = μ0 / (1 + α p)^β
    momentum: float = 0.9
    lr_alpha: float = 10.0
    lr_beta: float = 0.75
    lambda_gamma: float = 10.0  # γ of λ_p = 2 / (1 + exp(-γ p)) - 1

    def validate(self):
        if self.epochs < 1:
            raise UserError(f"train.epochs = {self.epochs} must be at least 1.")
        if not self.learning_rate > 0:
            raise UserError(f"train.learning_rate = {self.learning_rate} must be positive.")


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


SMOKE = {
    "data": {"digits": "synthetic", "backgrounds": "synthetic", "max_digits": 600, "batch_size": 32},
    "model": {"conv_filters": 8, "label_units": 32, "domain_units": 32},
    "train": {"epochs": 3},
    "export": {"representative_images": 20, "max_quantized_accuracy_drop": 0.3},
}

# ## The two domains
# Source: digits as grey images repeated to RGB. Target: other digits, blended with photo patches.
# Each digit belongs to one domain only, and target test images use photos no training image uses.


def load_digits(data):
    """-> (uint8 [n, 28, 28], int64 labels, class names), at most `max_digits`, in a seeded order."""
    if data.digits == "synthetic":
        digits, labels, class_names = mnist_m.synthetic_digits(data.max_digits or 1000, data.synthetic_classes,
                                                                seed=data.seed)
    else:
        digits, labels = mnist.load_digits(data.digits, data.digits_split, data.tfds_data_dir or None)
        class_names = [str(i) for i in range(10)]
    order = np.random.default_rng(data.seed).permutation(len(digits))
    if data.max_digits:
        order = order[: data.max_digits]
    return digits[order], labels[order], class_names


def build_domains(data, cache_path):
    """-> ({domain: {split: (uint8 RGB images, labels)}}, class names, summary). MNIST-M is cached in the run."""
    digits, labels, class_names = load_digits(data)
    num_target = int(round(len(digits) * data.target_fraction))
    pools = {"target": np.arange(num_target), "source": np.arange(num_target, len(digits))}
    split_indices = {domain: {split: pool[idx] for split, idx in image_data.stratified_split(
        labels[pool], data.validation_fraction, data.test_fraction, data.seed).items()} for domain, pool in pools.items()}
    photos, skipped = mnist_m.load_photos(data.backgrounds, data.seed)
    train_photos, test_photos = mnist_m.split_photos(len(photos), data.test_photo_fraction, data.seed)

    if os.path.isfile(cache_path):
        with np.load(cache_path) as cached:
            target_images = {split: cached[split] for split in split_indices["target"]}
    else:
        target_images = {
            split: mnist_m.blend(digits[idx], photos, test_photos if split == "test" else train_photos,
                                 seed=data.seed + i)[0]
            for i, (split, idx) in enumerate(split_indices["target"].items())
        }
        np.savez(cache_path + ".tmp.npz", **target_images)
        os.replace(cache_path + ".tmp.npz", cache_path)
    domains = {
        "source": {split: (mnist_m.grey_to_rgb(digits[idx]), labels[idx]) for split, idx in split_indices["source"].items()},
        "target": {split: (target_images[split], labels[idx]) for split, idx in split_indices["target"].items()},
    }
    summary = {
        "digits": data.digits, "backgrounds": data.backgrounds,
        "synthetic": data.digits == "synthetic" or data.backgrounds == "synthetic",
        "num_digits": len(digits), "num_photos": len(photos),
        "photos": {"train": len(train_photos), "test": len(test_photos)},
        "num_skipped": len(skipped), "skipped": skipped,
        "split_sizes": {domain: {split: len(pair[1]) for split, pair in splits.items()} for domain, splits in domains.items()},
    }
    return domains, class_names, summary


def mixed_batches(domains, split, labelled_domain, batch_size, seed, repeat):
    """Batches of (images, {"label", "domain"}, sample weights): half source, half target.

    Label weights are 2 on the labelled half and 0 on the other, so the label loss (Keras divides
    by the batch size) is the mean over labelled examples and label accuracy counts only them.
    The domain head sees every example.
    """
    half = batch_size // 2

    def stream(domain, domain_seed):
        images, labels = domains[domain][split]
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if repeat:
            ds = ds.shuffle(len(labels), seed=domain_seed).repeat()
        ds = ds.batch(half, drop_remainder=repeat)
        weight = 2.0 if domain == labelled_domain else 0.0
        domain_label = float(SOURCE if domain == "source" else TARGET)
        return ds.map(lambda x, y: (x, y, tf.fill(tf.shape(y), domain_label), tf.fill(tf.shape(y), weight)),
                      num_parallel_calls=tf.data.AUTOTUNE)

    def concat(source, target):
        x, y, d, w = (tf.concat([a, b], 0) for a, b in zip(source, target))
        return x, {"label": y, "domain": d}, {"label": w, "domain": tf.ones_like(d)}

    ds = tf.data.Dataset.zip(stream("source", seed), stream("target", seed + 1))
    return ds.map(concat, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ## The model
# Feature extractor conv(32, 5)-pool-conv(48, 5)-pool; label head dense 100-100-classes; domain head
# gradient reversal, then dense 100-1. Raw uint8 RGB images in; scaling is inside the model.


def build_dann(num_classes, config):
    images = keras.Input((28, 28, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(images)
    x = keras.layers.Conv2D(config.conv_filters, 5, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(config.conv_filters * 3 // 2, 5, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    features = keras.layers.Flatten(name="features")(x)
    h = keras.layers.Dense(config.label_units, activation="relu", name="label_hidden1")(features)
    h = keras.layers.Dense(config.label_units, activation="relu", name="label_hidden2")(h)
    label = keras.layers.Dense(num_classes, activation="softmax", name="label")(h)
    g = GradientReversal(strength=0.0, name="gradient_reversal")(features)
    g = keras.layers.Dense(config.domain_units, activation="relu", name="domain_hidden")(g)
    domain = keras.layers.Dense(1, activation="sigmoid", name="domain")(g)
    return keras.Model(images, {"label": label, "domain": domain}, name="dann")


def label_classifier(model):
    """image -> class probabilities: the feature extractor and label head, without the domain branch."""
    return keras.Model(model.input, model.get_layer("label").output, name="label_classifier")


def feature_extractor(model):
    return keras.Model(model.input, model.get_layer("features").output, name="feature_extractor")


def compile_dann(model, config, total_steps):
    learning_rate = AnnealedLearningRate(config.learning_rate, total_steps, config.lr_alpha, config.lr_beta)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(
        optimizer=optimizer,
        loss={"label": "sparse_categorical_crossentropy", "domain": "binary_crossentropy"},
        weighted_metrics={"label": ["accuracy"], "domain": ["binary_accuracy"]},
    )


def train_arm(model, arm, domains, config, stage_dir):
    """Fits one arm for train.epochs (no early stopping: target labels must not choose the DANN model).

    Resumable: BackupAndRestore within the fit; a finished arm leaves final weights that a rerun loads.
    Returns (history, [(step, λ)]).
    """
    labelled_domain, adapt = ARMS[arm]
    data, tc = config.data, config.train
    steps_per_epoch = max(len(domains[d]["train"][1]) for d in domains) // (data.batch_size // 2)
    total_steps = steps_per_epoch * tc.epochs
    final_weights = os.path.join(stage_dir, "final.weights.h5")
    schedule = GradientReversalSchedule([model.get_layer("gradient_reversal")], total_steps, tc.lambda_gamma,
                                        fixed=None if adapt else 0.0)
    compile_dann(model, tc, total_steps)
    lambdas_path = os.path.join(stage_dir, "lambda.json")
    if os.path.isfile(final_weights) and os.path.isfile(lambdas_path):
        model.load_weights(final_weights)
        with open(lambdas_path) as f:
            return train.read_csv_log(os.path.join(stage_dir, "log.csv")), json.load(f)
    os.makedirs(stage_dir, exist_ok=True)
    model.fit(
        mixed_batches(domains, "train", labelled_domain, data.batch_size, data.seed, repeat=True),
        steps_per_epoch=steps_per_epoch, epochs=tc.epochs,
        # validation: the label accuracy counts target examples only; it is drawn, never used to choose.
        validation_data=mixed_batches(domains, "validation", "target", data.batch_size, data.seed, repeat=False),
        callbacks=[schedule, keras.callbacks.BackupAndRestore(os.path.join(stage_dir, "backup")),
                   keras.callbacks.CSVLogger(os.path.join(stage_dir, "log.csv"), append=True)],
        verbose=2,
    )
    model.save_weights(final_weights)
    with open(lambdas_path, "w") as f:
        json.dump(schedule.history, f)
    return train.read_csv_log(os.path.join(stage_dir, "log.csv")), schedule.history


# ## Evaluation


def evaluate_arm(model, domains, class_names):
    """Label metrics on each domain's test split; domain-head accuracy on both test splits together."""
    result, domain_correct = {}, []
    for name, domain_label in (("source", SOURCE), ("target", TARGET)):
        images, labels = domains[name]["test"]
        outputs = model.predict(images, batch_size=256, verbose=0)
        result[name] = metrics.classification_report(labels, outputs["label"].argmax(-1), class_names)
        domain_correct.append((outputs["domain"][:, 0] > 0.5) == bool(domain_label))
    result["domain_accuracy"] = float(np.mean(np.concatenate(domain_correct)))
    result["lambda_at_end"] = float(model.get_layer("gradient_reversal").strength.numpy())
    return result


def pca_2d(features):
    """The first two principal components (numpy SVD of the centred features)."""
    centred = features - features.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_feature_projections(models, domains, path, per_domain=500):
    figure, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 5))
    for ax, (name, model) in zip(np.atleast_1d(axes), models.items()):
        extractor = feature_extractor(model)
        features = [extractor.predict(domains[d]["test"][0][:per_domain], verbose=0) for d in ("source", "target")]
        points = pca_2d(np.concatenate(features))
        n = len(features[0])
        ax.scatter(*points[:n].T, s=4, alpha=0.5, label="source (MNIST)", color="tab:blue")
        ax.scatter(*points[n:].T, s=4, alpha=0.5, label="target (MNIST-M)", color="tab:red")
        ax.set(title=f"{name}: features, PCA", xlabel="PC 1", ylabel="PC 2")
        ax.legend(markerscale=3)
    viz.save_figure(figure, path)


def plot_domain_curves(histories, lambdas, path):
    figure, (ax_domain, ax_lambda) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        ax_domain.plot(np.arange(1, len(history["val_domain_binary_accuracy"]) + 1),
                       history["val_domain_binary_accuracy"], label=name)
    ax_domain.axhline(0.5, color="gray", linestyle=":")
    ax_domain.set(xlabel="epoch", ylabel="domain-head accuracy (validation mix)", ylim=(0.3, 1.02))
    ax_domain.legend()
    if lambdas:
        steps, values = zip(*lambdas)
        ax_lambda.plot(steps, values, marker="o")
    ax_lambda.set(xlabel="training step", ylabel="λ (DANN)", title="gradient reversal strength")
    viz.save_figure(figure, path)


def plot_examples(domains, class_names, path, count=8):
    figure, axes = plt.subplots(2, count, figsize=(1.3 * count, 3))
    for row, domain in enumerate(("source", "target")):
        images, labels = domains[domain]["test"]
        for ax, image, label in zip(axes[row], images[:count], labels[:count]):
            ax.imshow(image)
            ax.set_title(f"{domain[0]}:{class_names[label]}", fontsize=8)
            ax.axis("off")
    viz.save_figure(figure, path)


# ## The lesson


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    os.makedirs(checkpoints, exist_ok=True)
    strategy = train.get_strategy(config.train.strategy)

    with timings("data"):
        domains, class_names, data_summary = build_domains(config.data, os.path.join(checkpoints, "mnist_m.npz"))
    print(f"Data: {data_summary['num_digits']} digits, {data_summary['num_photos']} photos "
          f"({data_summary['photos']}), split sizes {data_summary['split_sizes']}.")

    models, histories, results, lambdas = {}, {}, {}, None
    for arm in ARMS:
        keras.utils.set_random_seed(config.data.seed)  # each arm starts from the same weights
        with timings(f"train_{arm}"), strategy.scope():
            models[arm] = build_dann(len(class_names), config.model)
            histories[arm], schedule_history = train_arm(models[arm], arm, domains, config, os.path.join(checkpoints, arm))
        if arm == "dann":
            lambdas = schedule_history
        results[arm] = evaluate_arm(models[arm], domains, class_names)
        print(f"{arm}: target test accuracy {results[arm]['target']['accuracy']:.4f}, "
              f"source {results[arm]['source']['accuracy']:.4f}, domain head {results[arm]['domain_accuracy']:.4f}")

    with timings("export"):
        target_images, target_labels = domains["target"]["test"]
        representative = np.concatenate([domains[d]["train"][0][: config.export.representative_images // 2 + 1]
                                         for d in ("source", "target")])
        export_metrics = export.export_classifier(
            label_classifier(models["dann"]), run_dir, class_names, representative, target_images, target_labels,
            config.export.max_quantized_accuracy_drop,
        )

    gain = results["dann"]["target"]["accuracy"] - results["source_only"]["target"]["accuracy"]
    report = {
        "lesson": "dann",
        "config": dataclasses.asdict(config),
        "data": {**data_summary, "class_names": class_names},
        "note": _honesty_note(data_summary),
        "metrics": results,
        "dann_gain_over_source_only": gain,
        "paper_target_accuracy": PAPER_TARGET_ACCURACY,
        "lambda_schedule": lambdas,
        "exported": "the DANN label classifier (image -> class; the gradient reversal and domain head dropped)",
        "export": export_metrics,
        "timings_seconds": dict(timings),
    }
    viz.plot_training_curves(
        {arm: (1, {"loss": h["label_loss"], "accuracy": h["label_accuracy"], "val_loss": h["val_label_loss"],
                   "val_accuracy": h["val_label_accuracy"]}) for arm, h in histories.items()},
        os.path.join(run_dir, "training_curves.png"),
        "dann: label loss/accuracy (train: labelled half; validation: target, shown only)",
    )
    plot_domain_curves(histories, lambdas, os.path.join(run_dir, "domain_curves.png"))
    plot_feature_projections({arm: models[arm] for arm in ("source_only", "dann")}, domains,
                             os.path.join(run_dir, "features_pca.png"))
    plot_examples(domains, class_names, os.path.join(run_dir, "examples.png"))
    viz.plot_confusion_matrix(results["dann"]["target"]["confusion_matrix"], class_names,
                              os.path.join(run_dir, "confusion_matrix.png"), "DANN, target (MNIST-M) test split")
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def _honesty_note(data_summary):
    notes = []
    if data_summary["synthetic"]:
        notes.append("The data is synthetic (generated glyph 'digits' and textured backgrounds), not MNIST and "
                     "BSDS500: these figures show that the pipeline works, not what domain adaptation achieves.")
    notes.append("The paper's figures are quoted from Ganin & Lempitsky (2015), Table 1, not computed here; they "
                 "used all 60,000 MNIST training digits and the full-size BSDS500 photos.")
    return " ".join(notes)


def summary_markdown(report):
    data = report["data"]
    sizes = data["split_sizes"]
    lines = [
        "# dann run",
        "",
        f"Source: {data['digits']}; target: the same kind of digits (disjoint) blended with photo patches from "
        f"{data['backgrounds']} ({data['photos']['train']} photos for train/validation, {data['photos']['test']} "
        f"others for test; {data['num_skipped']} file(s) skipped).",
        "Split sizes: " + "; ".join(f"{d} " + ", ".join(f"{s} {n}" for s, n in splits.items()) for d, splits in sizes.items()) + ".",
        "",
        f"**Note.** {report['note']}",
        "",
        "| arm | target test acc | source test acc | domain-head acc (test mix; 0.5 = invariant) |",
        "|---|---|---|---|",
    ]
    names = {"source_only": "source-only", "dann": "DANN", "target_trained": "target-trained (ceiling)"}
    for arm, result in report["metrics"].items():
        lines.append(f"| {names[arm]} (ours) | {result['target']['accuracy']:.4f} | {result['source']['accuracy']:.4f} "
                     f"| {result['domain_accuracy']:.4f} |")
    for arm, accuracy in report["paper_target_accuracy"].items():
        lines.append(f"| {names[arm]} (paper, quoted) | {accuracy:.4f} | – | – |")
    lines += ["", f"DANN minus source-only on the target: {100 * report['dann_gain_over_source_only']:+.1f} points.", "",
              f"Exported: {report['exported']}; checked on the target test split.", "",
              *export.classifier_table(report["export"])]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
