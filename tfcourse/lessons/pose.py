"""
Title: Pose classification on MoveNet keypoints
Description: A frozen MoveNet SinglePose turns a photo into 17 keypoints; a small Keras classifier
on a normalised pose embedding names the pose. The classifier (keypoints in, classes out) is
exported as SavedModel and TFLite, each checked against Keras; our extracted keypoints are scored
by PCK against the keypoints MoveNet's publisher computed for the same photo.

    tfcourse run pose --smoke    # generated stick-figure keypoints, no MoveNet: about half a minute
    TFCOURSE_ASSETS=../shared/assets tfcourse run pose --config configs/pose-assets.yaml
    tfcourse predict saved_models/pose PHOTO.jpg ...    # photo -> MoveNet -> pose class

The assets run trains on the yoga keypoint CSVs (5 poses; the keypoints were extracted with
MoveNet by the data's authors, in pixels of their photos), tests on their test CSV, evaluates on
29 other yoga photos through our own MoveNet (the int8 Lightning TFLite file), and checks that
MoveNet against the publisher's reference keypoints of `images/squat_person.jpg`.

Training data is a keypoint CSV (`file_name`, then `<keypoint>_x, _y, _score` for COCO's 17
keypoints in pixels, then optionally `class_no, class_name`; without `class_name` the class is the
folder part of `file_name`), or a folder of class folders of photos, whose keypoints are extracted
once and cached in `<run>/keypoint_cache.json` (keyed by path, size and mtime). The assets' yoga
CSVs hold MoveNet's (y, x) under the `_x, _y` names (a standing tree pose runs along "x"), so
their config sets `data.csv_xy_swapped: true`; without it photos through our MoveNet score at chance.

The embedding (see `PoseEmbedding`) is inside the Keras model: the exported TFLite takes raw
keypoints [17, 3] in pixels and can be used as-is in a mobile demo.

The extractor (`extractor.source`) is a MoveNet TFLite file, a local SavedModel folder or a TF Hub
handle; the run records it, and `tfcourse predict` rebuilds it from the report. A SavedModel or
TFLite file is a program: only point this at models you trust.
"""

import csv
import dataclasses
import json
import os
import typing

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, export, metrics, runs, train, viz
from tfcourse.data import images
from tfcourse.data.folders import list_class_folder
from tfcourse.metrics.pose import pck
from tfcourse.models import movenet
from tfcourse.models.movenet import KEYPOINT, KEYPOINT_NAMES

NUM_KEYPOINTS = len(KEYPOINT_NAMES)
TORSO_PAIR = (KEYPOINT["left_shoulder"], KEYPOINT["right_hip"])  # PCK's size: this distance in the reference

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    source: str = ""  # a keypoint CSV, a folder of class folders of photos, or "synthetic"
    test_source: str = ""  # a keypoint CSV or photo folder; "" splits test_fraction off `source`
    photos: str = ""  # optional class folders of photos to evaluate through MoveNet (and draw)
    validation_fraction: float = 0.15
    test_fraction: float = 0.15  # only where test_source is ""
    min_pose_score: float = 0.2  # training photos whose mean keypoint score is lower are skipped
    csv_xy_swapped: bool = False  # the CSVs hold (y, x) under the _x, _y names (the assets' yoga CSVs do)
    synthetic_per_class: int = 60
    batch_size: int = 32
    seed: int = 42

    def validate(self):
        for name in ("validation_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 0.5:
                raise UserError(f"data.{name} = {getattr(self, name)} must be in [0, 0.5).")
        if self.batch_size < 1 or self.synthetic_per_class < 4:
            raise UserError("data.batch_size must be >= 1 and data.synthetic_per_class >= 4.")


@dataclasses.dataclass
class ExtractorConfig:
    source: str = movenet.LIGHTNING_HANDLE  # a MoveNet .tflite file, a SavedModel folder or a TF Hub handle
    input_size: int = 0  # 0: from the TFLite file, or 256 for a Thunder handle and 192 otherwise


@dataclasses.dataclass
class ModelConfig:
    hidden_units: int = 128  # then half as many in a second layer
    dropout: float = 0.5


@dataclasses.dataclass
class TrainConfig:
    strategy: typing.Literal[train.STRATEGIES] = "auto"
    epochs: int = 200
    learning_rate: float = 1e-3
    early_stopping_patience: int = 20

    def validate(self):
        if self.epochs < 1 or not self.learning_rate > 0:
            raise UserError("train.epochs must be >= 1 and train.learning_rate > 0.")


@dataclasses.dataclass
class CheckConfig:
    reference_image: str = ""  # a photo and the publisher's keypoints for it; "" skips the PCK check
    reference_keypoints: str = ""


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    extractor: ExtractorConfig = dataclasses.field(default_factory=ExtractorConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    check: CheckConfig = dataclasses.field(default_factory=CheckConfig)


SMOKE = {
    "data": {"source": "synthetic", "synthetic_per_class": 40, "validation_fraction": 0.2, "test_fraction": 0.2},
    "model": {"hidden_units": 32, "dropout": 0.2},
    "train": {"epochs": 30, "learning_rate": 3e-3, "early_stopping_patience": 30},
}

# ## The data
# Keypoints are [n, 17, 3] (x, y, score) in pixels of each photo: the CSV's units. Bad rows and
# photos are counted and reported, not dropped silently.

CSV_COLUMNS = ["file_name"] + [f"{name}_{part}" for name in KEYPOINT_NAMES for part in ("x", "y", "score")]


def read_keypoint_csv(path, xy_swapped=False):
    """-> (keypoints [n, 17, 3] (x, y, score), class name per row, skipped rows [{row, file_name, reason}]).

    `xy_swapped`: the `_x` columns hold the vertical coordinate and `_y` the horizontal one.
    """
    if not os.path.isfile(path):
        raise UserError(f"Keypoint CSV {path!r} does not exist.")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"Keypoint CSV {path!r} lacks column(s) {missing[:4]}; expected file_name, then "
                            "<keypoint>_x, <keypoint>_y, <keypoint>_score for COCO's 17 keypoints.")
        keypoints, names, skipped = [], [], []
        for row_number, row in enumerate(reader, start=2):
            name = row.get("class_name") or os.path.dirname(row["file_name"]).split("/")[0]
            try:
                values = np.array([float(row[c]) for c in CSV_COLUMNS[1:]], np.float32)
            except (TypeError, ValueError):
                values = None
            if values is None or not np.isfinite(values).all() or not name:
                skipped.append({"row": row_number, "file_name": row["file_name"],
                                "reason": "no class" if values is not None and not name else "non-numeric keypoints"})
                continue
            keypoints.append(values.reshape(NUM_KEYPOINTS, 3))
            names.append(name)
    if not keypoints:
        raise UserError(f"Keypoint CSV {path!r} has no usable rows.")
    keypoints = np.stack(keypoints)
    if xy_swapped:
        keypoints = keypoints[:, :, [1, 0, 2]]
    return keypoints, names, skipped


def write_synthetic_keypoint_csv(path, per_class=60, seed=0):
    """Stick figures whose joint angles depend on the class, with noise, in the CSV format above.

    Each limb segment has a class-specific angle from straight down (radians; toward the
    figure's own side), jittered by 0.15 rad; figures get a random size, position and lean.
    """
    angles = {  # upper arm, forearm, thigh, shin (left side; the right side is mirrored unless listed)
        "arms_down": (0.2, 0.1, 0.05, 0.0),
        "arms_up": (2.8, 3.0, 0.05, 0.0),
        "t_pose": (1.57, 1.57, 0.1, 0.0),
        "squat": (1.2, 1.0, 1.3, 0.2),
        "tree": (2.9, 3.1, 0.0, 0.0, 1.4, -2.3),  # + right thigh, right shin: foot on the standing knee
    }
    rng = np.random.default_rng(seed)
    rows = []
    for class_name, limb_angles in angles.items():
        for i in range(per_class):
            a = np.array(limb_angles) + rng.normal(0, 0.15, len(limb_angles))
            right_legs = a[4:6] if len(a) > 4 else a[2:4]
            unit, lean = rng.uniform(50, 90), rng.normal(0, 0.1)
            hips = np.array([rng.uniform(100, 200), rng.uniform(140, 180)])
            points = _stick_figure(hips, unit, lean, a[:2], a[:2] + rng.normal(0, 0.1, 2), a[2:4], right_legs)
            points += rng.normal(0, 2, points.shape)
            scores = rng.uniform(0.4, 0.9, (NUM_KEYPOINTS, 1))
            keypoints = np.concatenate([points, scores], axis=1)
            rows.append([f"{class_name}/figure{i:03d}.jpg", *np.round(keypoints.reshape(-1), 3), class_name])
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS + ["class_name"])
        writer.writerows(rows)
    return path


def _stick_figure(hips, unit, lean, left_arm, right_arm, left_leg, right_leg):
    """[17, 2] pixel keypoints of a front-facing figure (its left on the image's right), y down."""
    def direction(angle, side):  # 0 is straight down; positive turns toward the figure's `side`
        return np.array([side * np.sin(angle), np.cos(angle)])

    up = -direction(lean, 1)
    across = np.array([-up[1], up[0]])  # toward the figure's left: the image's right
    shoulders = hips + unit * up
    p = np.zeros((NUM_KEYPOINTS, 2))
    p[KEYPOINT["nose"]] = shoulders + 0.45 * unit * up
    for side, sign in (("left", 1), ("right", -1)):
        p[KEYPOINT[f"{side}_eye"]] = p[0] + unit * (0.08 * sign * across + 0.06 * up)
        p[KEYPOINT[f"{side}_ear"]] = p[0] + unit * 0.16 * sign * across
        p[KEYPOINT[f"{side}_shoulder"]] = shoulders + 0.25 * sign * unit * across
        p[KEYPOINT[f"{side}_hip"]] = hips + 0.15 * sign * unit * across
        arm, leg = (left_arm, left_leg) if side == "left" else (right_arm, right_leg)
        p[KEYPOINT[f"{side}_elbow"]] = p[KEYPOINT[f"{side}_shoulder"]] + 0.45 * unit * direction(arm[0], sign)
        p[KEYPOINT[f"{side}_wrist"]] = p[KEYPOINT[f"{side}_elbow"]] + 0.4 * unit * direction(arm[1], sign)
        p[KEYPOINT[f"{side}_knee"]] = p[KEYPOINT[f"{side}_hip"]] + 0.55 * unit * direction(leg[0], sign)
        p[KEYPOINT[f"{side}_ankle"]] = p[KEYPOINT[f"{side}_knee"]] + 0.5 * unit * direction(leg[1], sign)
    return p


def extract_keypoints(files, extractor, cache_path):
    """Photos -> ([n, 17, 3] (x, y, score) in pixels, indices of the n decoded files, skipped files),
    through MoveNet once: results are cached in `cache_path` by path, size and mtime, for this
    extractor only. Undecodable files are skipped and listed."""
    cache = {"extractor": [extractor.source, extractor.input_size], "keypoints": {}}
    if os.path.isfile(cache_path):
        with open(cache_path) as f:
            stored = json.load(f)
        if stored.get("extractor") == cache["extractor"]:
            cache = stored
    keypoints, kept, skipped, extracted = [], [], [], 0
    for i, path in enumerate(files):
        stat = os.stat(path)
        key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in cache["keypoints"]:
            try:
                image = images.read_image_file(path)
            except UserError as error:
                skipped.append({"path": path, "reason": f"undecodable: {error}"})
                continue
            cache["keypoints"][key] = {"size": list(image.shape[:2]), "keypoints": extractor(image).tolist()}
            extracted += 1
        entry = cache["keypoints"][key]
        height, width = entry["size"]
        keypoints.append(np.asarray(entry["keypoints"], np.float32) * [width, height, 1])
        kept.append(i)
    if extracted:
        with open(cache_path + ".tmp", "w") as f:
            json.dump(cache, f)
        os.replace(cache_path + ".tmp", cache_path)
    print(f"Keypoints of {len(files)} photo(s): {extracted} extracted with MoveNet, {len(files) - extracted} from the cache.")
    return np.asarray(keypoints, np.float32).reshape(-1, NUM_KEYPOINTS, 3), np.asarray(kept, int), skipped


def load_photo_folder(root, extractor, cache_path, min_pose_score):
    """A folder of class folders of photos -> (keypoints, class name per photo, files, skipped)."""
    files, labels, class_names = list_class_folder(root, "photo")
    keypoints, kept, skipped = extract_keypoints(files, extractor, cache_path)
    confident = keypoints[:, :, 2].mean(axis=1) >= min_pose_score
    skipped += [{"path": files[i], "reason": f"no confident pose (mean keypoint score < {min_pose_score})"}
                for i, ok in zip(kept, confident) if not ok]
    kept, keypoints = kept[confident], keypoints[confident]
    return keypoints, [class_names[labels[i]] for i in kept], [files[i] for i in kept], skipped


def load_source(source, extractor, run_dir, min_pose_score, csv_xy_swapped=False):
    """-> (keypoints, class names per row, files or None, skipped) of a keypoint CSV or a photo folder."""
    if os.path.isdir(source):
        return load_photo_folder(source, extractor(), os.path.join(run_dir, "keypoint_cache.json"), min_pose_score)
    keypoints, names, skipped = read_keypoint_csv(source, csv_xy_swapped)
    return keypoints, names, None, skipped


def load_data(data, extractor, work_dir, run_dir):
    """-> ({split: (keypoints, labels)}, class names, summary, {split: files or None})."""
    if not data.source:
        raise UserError("data.source is not set: give a keypoint CSV or a folder of class folders of photos "
                        "(--set data.source=PATH), or use configs/pose-assets.yaml with TFCOURSE_ASSETS.")
    source = data.source
    if source == "synthetic":
        source = write_synthetic_keypoint_csv(os.path.join(work_dir, "synthetic_keypoints.csv"), data.synthetic_per_class, data.seed)
    keypoints, names, files, skipped = load_source(source, extractor, run_dir, data.min_pose_score, data.csv_xy_swapped)
    class_names = sorted(set(names))
    if len(class_names) < 2:
        raise UserError(f"data.source {data.source!r} has {len(class_names)} class(es); a classifier needs two or more.")
    labels = np.array([class_names.index(n) for n in names])
    test_fraction = 0.0 if data.test_source else data.test_fraction
    indices = images.stratified_split(labels, data.validation_fraction, test_fraction, data.seed)
    splits = {split: (keypoints[idx], labels[idx]) for split, idx in indices.items()}
    split_files = {split: None if files is None else [files[i] for i in idx] for split, idx in indices.items()}
    summary = {"source": data.source, "synthetic": data.source == "synthetic", "skipped": skipped}
    if data.test_source:
        test_keypoints, test_names, test_files, test_skipped = load_source(
            data.test_source, extractor, run_dir, data.min_pose_score, data.csv_xy_swapped)
        unknown = sorted(set(test_names) - set(class_names))
        if unknown:
            raise UserError(f"data.test_source {data.test_source!r} has classes {unknown} that data.source lacks "
                            f"(its classes: {class_names}).")
        splits["test"] = (test_keypoints, np.array([class_names.index(n) for n in test_names]))
        split_files["test"] = test_files
        summary.update(test_source=data.test_source, skipped=skipped + test_skipped)
    summary["num_skipped"] = len(summary["skipped"])
    summary["per_split_per_class"] = {
        split: dict(zip(class_names, np.bincount(y, minlength=len(class_names)).tolist())) for split, (_, y) in splits.items()}
    return splits, class_names, summary, split_files


def keypoint_dataset(keypoints, labels, batch_size, training, seed):
    ds = tf.data.Dataset.from_tensor_slices((keypoints.astype("float32"), labels.astype("int32")))
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ## The model
# The embedding is part of the Keras model, so the exported TFLite takes raw MoveNet keypoints
# [17, 3] (in pixels, or any units the same in x and y) and a mobile demo needs no extra code.


@keras.saving.register_keras_serializable(package="tfcourse")
class PoseEmbedding(keras.layers.Layer):
    """[batch, 17, 3] (x, y, score) -> [batch, 34]: (x, y) centred on the hips' midpoint and divided
    by the pose size, max(torso_multiplier * torso length, largest keypoint distance from the hips).

    This is the normalisation of TensorFlow Lite's pose-classification tutorial, whose MoveNet
    pipeline produced the yoga CSVs: it removes position and scale (so pixels of any photo size
    work), while the max() keeps the size sensible where the torso is foreshortened (cobra, dog).
    Scores are dropped: they say how sure MoveNet was, not what the pose is.
    """

    def __init__(self, torso_multiplier=2.5, **kwargs):
        super().__init__(**kwargs)
        self.torso_multiplier = torso_multiplier

    def call(self, keypoints):
        ops = keras.ops
        xy = keypoints[..., :2]
        hips = (xy[:, KEYPOINT["left_hip"]] + xy[:, KEYPOINT["right_hip"]]) / 2
        shoulders = (xy[:, KEYPOINT["left_shoulder"]] + xy[:, KEYPOINT["right_shoulder"]]) / 2
        torso = ops.sqrt(ops.sum(ops.square(shoulders - hips), axis=-1))
        centred = xy - hips[:, None]
        farthest = ops.max(ops.sqrt(ops.sum(ops.square(centred), axis=-1)), axis=-1)
        size = ops.maximum(ops.maximum(self.torso_multiplier * torso, farthest), 1e-6)
        return ops.reshape(centred / size[:, None, None], (-1, 2 * NUM_KEYPOINTS))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * NUM_KEYPOINTS)

    def get_config(self):
        return {**super().get_config(), "torso_multiplier": self.torso_multiplier}


def build_classifier(num_classes, hidden_units=128, dropout=0.5):
    keypoints = keras.Input((NUM_KEYPOINTS, 3), name="keypoints")
    x = PoseEmbedding(name="pose_embedding")(keypoints)
    x = keras.layers.Dense(hidden_units, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(max(hidden_units // 2, 1), activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(keypoints, probabilities, name="pose_classifier")


# ## The checks: PCK of our MoveNet against the publisher's keypoints


def pck_check(extractor, image_path, reference_path):
    """PCK@0.1 and @0.2 (torso: left shoulder to right hip) of our keypoints vs the reference, in pixels."""
    image = images.read_image_file(image_path)
    reference = movenet.read_reference_keypoints(reference_path)
    ours = extractor(image)
    scale = np.array([image.shape[1], image.shape[0]], np.float32)
    predicted, target = ours[None, :, :2] * scale, reference[None, :, :2] * scale
    visible = np.ones((1, NUM_KEYPOINTS), bool)
    result = {"image": image_path, "reference": reference_path, "torso_pair": [KEYPOINT_NAMES[i] for i in TORSO_PAIR]}
    for alpha in (0.05, 0.1, 0.2):
        result[f"pck@{alpha}"] = pck(predicted, target, visible, alpha=alpha, normalize="torso", torso_pair=TORSO_PAIR)
    distances = np.linalg.norm(predicted - target, axis=-1)[0] / np.linalg.norm(target[0, TORSO_PAIR[0]] - target[0, TORSO_PAIR[1]])
    result["distance_over_torso"] = dict(zip(KEYPOINT_NAMES, np.round(distances, 3).tolist()))
    return result, image, ours


# ## The lesson


def run(config, run_dir):
    timings = runs.Timings()
    work_dir = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    strategy = train.get_strategy(config.train.strategy)
    data = config.data
    extractors = []

    def extractor():  # built once, only where photos are read
        if not extractors:
            extractors.append(movenet.MoveNet(config.extractor.source, config.extractor.input_size))
        return extractors[0]

    with timings("data"):
        splits, class_names, data_summary, split_files = load_data(data, extractor, work_dir, run_dir)
    sizes = {split: len(y) for split, (_, y) in splits.items()}
    print(f"Data: {data.source}, classes {class_names}, split sizes {sizes}, {data_summary['num_skipped']} skipped.")

    batch_size = train.global_batch_size(data.batch_size, strategy)  # data.batch_size is per replica
    with timings("train"), train.model_scope(strategy):
        model = build_classifier(len(class_names), config.model.hidden_units, config.model.dropout)
        train.compile_classifier(model, config.train.learning_rate, strategy)
        history = train.fit_stage(
            model, keypoint_dataset(*splits["train"], batch_size, True, data.seed),
            keypoint_dataset(*splits["validation"], batch_size, False, data.seed), config.train.epochs,
            os.path.join(work_dir, "classifier"), config.train.early_stopping_patience, strategy,
        )
    results = {}
    for split, (keypoints, labels) in splits.items():
        results[split] = metrics.classification_report(labels, model.predict(keypoints, verbose=0).argmax(-1), class_names)
    print(f"Test accuracy: {results['test']['accuracy']:.3f}")

    with timings("export"):
        export_metrics = export.export_feature_classifier(
            model, run_dir, class_names, *splits["test"],
            extra_metrics={"input": "keypoints [17, 3] (x, y, score), x and y in pixels of the photo, COCO order",
                           "keypoint_names": list(KEYPOINT_NAMES)},
        )

    photos, photo_keypoints = None, None
    if data.photos:  # the CSV-trained classifier on other photos, through our own MoveNet
        with timings("photos"):
            photos, photo_keypoints = evaluate_photos(model, data.photos, class_names, extractor(), run_dir,
                                                      data.min_pose_score)
    pck_result = None
    if config.check.reference_image and config.check.reference_keypoints:
        with timings("pck_check"):
            pck_result, _, _ = pck_check(extractor(), config.check.reference_image, config.check.reference_keypoints)
        print(f"PCK@0.1 (torso) of our MoveNet vs the publisher's keypoints: {pck_result['pck@0.1']:.3f}")

    report = {
        "lesson": "pose",
        "config": dataclasses.asdict(config),
        "data": {**data_summary, "class_names": class_names, "split_sizes": sizes},
        "extractor": {"source": config.extractor.source, "input_size": config.extractor.input_size,
                      "used": bool(extractors), "kind": extractors[0].kind if extractors else None},
        "embedding": "centred on the hips' midpoint, divided by max(2.5 x torso length, farthest keypoint)",
        "note": _honesty_note(data, extractors),
        "metrics": results,
        "photos": photos,
        "pck": pck_result,
        "export": export_metrics,
        "timings_seconds": dict(timings),
    }
    viz.plot_training_curves({"classifier": (1, history)}, os.path.join(run_dir, "training_curves.png"),
                             "pose: keypoint classifier")
    viz.plot_confusion_matrix(results["test"]["confusion_matrix"], class_names,
                              os.path.join(run_dir, "confusion_matrix.png"), "test split")
    plot_poses(model, splits["test"], split_files["test"], photos, photo_keypoints, class_names,
               os.path.join(run_dir, "skeletons.png"))
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def evaluate_photos(model, root, class_names, extractor, run_dir, min_pose_score=0.2):
    """The classifier on class folders of photos through MoveNet -> (report, their keypoints)."""
    """The classifier on photos through MoveNet -> (report, their keypoints). Only the sub-folders of
    `root` named after the classifier's classes are read; the report lists the others (e.g. a CSV folder)."""
    if not os.path.isdir(root):
        raise UserError(f"data.photos {root!r} is not a folder of class folders.")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    files, labels = [], []
    for label, name in enumerate(class_names):
        if name in folders:
            names = sorted(f for f in os.listdir(os.path.join(root, name)) if not f.startswith("."))
            files += [os.path.join(root, name, f) for f in names]
            labels += [label] * len(names)
    if not files:
        raise UserError(f"data.photos {root!r} has no sub-folder named after a class ({class_names}).")
    keypoints, kept, skipped = extract_keypoints(files, extractor, os.path.join(run_dir, "keypoint_cache.json"))
    files, labels = [files[i] for i in kept], np.asarray(labels)[kept]
    probabilities = model.predict(keypoints, verbose=0)
    report = metrics.classification_report(labels, probabilities.argmax(-1), class_names)
    low = keypoints[:, :, 2].mean(axis=1) < min_pose_score
    return {**report, "source": root, "num_photos": len(labels), "num_low_confidence_pose": int(low.sum()),
            "ignored_folders": [d for d in folders if d not in class_names],
            "num_skipped": len(skipped), "skipped": skipped,
            "per_photo": [{"file": f, "true": class_names[t], "predicted": class_names[int(p.argmax())],
                           "probability": float(p.max())} for f, t, p in zip(files, labels, probabilities)]}, keypoints


def plot_poses(model, test_split, test_files, photos, photo_keypoints, class_names, path, count=8):
    """Skeletons over photos (the evaluated photos, else test photos) or, for CSV keypoints, on blank canvases."""
    if photos:
        chosen = np.linspace(0, len(photos["per_photo"]) - 1, min(count, len(photos["per_photo"]))).astype(int)
        files = [photos["per_photo"][i]["file"] for i in chosen]
        titles = [f"{r['true']} -> {r['predicted']} ({r['probability']:.2f})" for r in (photos["per_photo"][i] for i in chosen)]
        keypoints = photo_keypoints[chosen]
    else:
        test_keypoints, test_labels = test_split
        chosen = np.linspace(0, len(test_labels) - 1, min(count, len(test_labels))).astype(int)
        keypoints = test_keypoints[chosen]
        probabilities = model.predict(keypoints, verbose=0)
        titles = [f"{class_names[t]} -> {class_names[int(p.argmax())]} ({p.max():.2f})"
                  for t, p in zip(test_labels[chosen], probabilities)]
        files = [test_files[i] for i in chosen] if test_files else [None] * len(chosen)
    items = [(images.read_image_file(file) if file else None, points, title)
             for file, points, title in zip(files, keypoints, titles)]
    viz.plot_skeletons(items, movenet.SKELETON, path)


def _honesty_note(data, extractors):
    notes = []
    if data.source == "synthetic":
        notes.append("The data is generated stick-figure keypoints, not MoveNet keypoints of photos, and MoveNet "
                     "was not run: the photo -> keypoints -> class path (tfcourse predict) and the PCK check are "
                     "exercised by tests/models/test_movenet.py and tests/lessons/test_pose.py with the real "
                     "MoveNet TFLite file where TFCOURSE_ASSETS is set.")
    elif not os.path.isdir(data.source):
        notes.append("The training and test keypoints come from the CSVs, extracted by the data's authors with "
                     "their MoveNet pipeline; photos and the PCK check go through ours.")
    return " ".join(notes)


# ## Prediction: `tfcourse predict RUN_DIR PHOTO...`


def predict_files(run_dir, files, top_k=3, fmt="saved_model"):
    """Photo -> MoveNet (rebuilt from the run's report) -> the exported classifier -> top-k poses.

    The extractor and the SavedModel/TFLite classifier are programs: only use runs you trust.
    """
    report_path = os.path.join(run_dir, "report.json")
    with open(report_path) as f:
        report = json.load(f)
    predict, class_names, _ = export.load_feature_classifier(run_dir, fmt)
    extractor = movenet.MoveNet(report["extractor"]["source"], report["extractor"]["input_size"])
    min_score = report["config"]["data"]["min_pose_score"]
    results = []
    for path in files:
        image = images.read_image_file(path)
        keypoints = extractor(image) * [image.shape[1], image.shape[0], 1]
        probabilities = np.asarray(predict(keypoints[None].astype("float32")))[0]
        result = {"file": path, "top_k": export.top_k_classes(probabilities, class_names, top_k),
                  "mean_keypoint_score": float(keypoints[:, 2].mean())}
        if result["mean_keypoint_score"] < min_score:
            result["warning"] = f"no confident pose: mean keypoint score below {min_score}"
        results.append(result)
    return results


def summary_markdown(report):
    m = report["metrics"]
    lines = ["# pose run", "",
             f"Data: {report['data']['source']}, classes {report['data']['class_names']}, split sizes "
             f"{report['data']['split_sizes']}, {report['data']['num_skipped']} skipped. "
             f"Extractor: MoveNet from {report['extractor']['source']}. Embedding: {report['embedding']}.", ""]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| split | accuracy | macro F1 |", "|---|---|---|"]
    lines += [f"| {split} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} |" for split, r in m.items()]
    if report["photos"]:
        p = report["photos"]
        lines += ["", f"Photos ({p['source']}, through our MoveNet): accuracy {p['accuracy']:.3f} on "
                  f"{p['num_photos']} photos ({p['num_low_confidence_pose']} with a low-confidence pose)."]
    if report["pck"]:
        c = report["pck"]
        lines += ["", f"PCK (torso) of our MoveNet vs the publisher's keypoints on {os.path.basename(c['image'])}: "
                  f"@0.05 {c['pck@0.05']:.3f}, @0.1 {c['pck@0.1']:.3f}, @0.2 {c['pck@0.2']:.3f}."]
    lines += ["", "| export | test acc | max abs diff vs Keras | size (KB) |", "|---|---|---|---|"]
    for variant in ("saved_model", "float32", "dynamic_range"):
        e = report["export"][variant]
        lines.append(f"| {variant} | {e['accuracy']:.3f} | {e['max_abs_diff']:.1e} | {e['size_bytes'] / 1024:.0f} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
