"""
Title: Prompted segmentation with Segment Anything, adapted, against a U-Net
Description: SAM segments whatever a prompt points at: points, a box or a rough mask. This lesson
prompts it, adapts it to one kind of object by fine-tuning its mask decoder on cached image
embeddings with jittered box prompts (SAM's Dice + focal loss, in SAM's own training step), trains
a small SAM whole from scratch, and compares both with a U-Net over a pretrained MobileNetV2 trained
on the same images. Reports mIoU, Dice and pixel accuracy on a held-out split; exports the image
encoder and the prompt decoder as SavedModels and the decoder as TFLite, each checked against Keras.

    tfcourse run segment-anything    # SAM ViT-B (sam_base_sa1b) from Kaggle; your data via data.source
    tfcourse run segment-anything --smoke    # shapes on textures, tiny random models: a minute on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run segment-anything --config configs/segment-anything-assets.yaml

The data is a Pascal VOC-style segmentation folder (see tfcourse.data.masks), or is written as
one: "pasted" pastes objects photographed on black (PlantVillage's segmented leaves) onto square
crops of photos at random rotations, scales and positions, keeping each object's exact mask. No
object photo and no background photo is in two splits. The task is object against background.

Every prompt is in the pixels of the lesson's images (data.image_size); a SAM of another input size
(presets take 1024 px) rescales prompts and images inside its models.
"""

import dataclasses
import os
import shutil
import time
import typing

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, export, metrics, runs, train, viz
from tfcourse.data import boxes, images, masks
from tfcourse.models import sam as sam_models
from tfcourse.models.backbones import build_backbone
from tfcourse.models.unet import SKIP_LAYERS, build_unet

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    source: str = "pasted"  # "pasted" (objects onto photos), "synthetic" (shapes, smoke), or a VOC segmentation folder
    objects: str = ""  # "pasted": a folder of class folders of objects on a black background
    backgrounds: str = ""  # "pasted": a folder of photos to paste them onto
    pastes_per_object: int = 4  # training images per training object
    evaluation_pastes_per_object: int = 2  # validation and test images per object of those splits
    scale_min: float = 0.35  # pasted object's longest side over the image side
    scale_max: float = 0.8
    mask_threshold: int = 30  # brightness above which a pixel of an object photo is object
    image_size: int = 256
    batch_size: int = 8
    box_jitter: float = 0.1  # training box prompts: each edge moved by up to this share of the box's side
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 42
    skip_bad_files: bool = True  # false: an unusable image or label map stops the run

    def validate(self):
        if self.image_size < 64 or self.image_size % 32:
            raise UserError(f"data.image_size = {self.image_size}: use a multiple of 32, at least 64 (the U-Net halves "
                            "it five times).")
        if min(self.pastes_per_object, self.evaluation_pastes_per_object, self.batch_size) < 1:
            raise UserError("data.pastes_per_object, data.evaluation_pastes_per_object and data.batch_size must be >= 1.")
        if not 0 < self.scale_min <= self.scale_max <= 1:
            raise UserError(f"data.scale_min/scale_max = {self.scale_min}/{self.scale_max}: need 0 < min <= max <= 1.")
        if not 0 <= self.box_jitter < 0.5:
            raise UserError(f"data.box_jitter = {self.box_jitter} must be in [0, 0.5).")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise UserError(f"data.{name} = {getattr(self, name)} must be between 0 and 0.5.")


@dataclasses.dataclass
class ModelConfig:
    sam: str = "sam_base_sa1b"  # SAM to fine-tune: a KerasHub preset, a local preset folder, or small / tiny (random)
    scratch_sam: str = "small"  # SAM trained whole from scratch: small or tiny; "" skips it
    unet_backbone: typing.Literal[tuple(SKIP_LAYERS)] = "mobilenet_v2"
    unet_source: str = "imagenet"  # imagenet | random | path to .weights.h5 | path to a .tflite classifier
    unet_width_multiplier: float = 1.0  # MobileNetV2 alpha, for random weights (the smoke run)

    def validate(self):
        if self.scratch_sam not in ("", *sam_models.SCRATCH_SIZES):
            raise UserError(f"model.scratch_sam = {self.scratch_sam!r}: choose one of "
                            f"{', '.join(sam_models.SCRATCH_SIZES)}, or '' to skip it.")


@dataclasses.dataclass
class TrainConfig:
    strategy: typing.Literal["auto", "default", "mirrored", "tpu", "multi_worker"] = "auto"
    decoder_epochs: int = 20  # SAM: mask decoder on cached embeddings
    decoder_learning_rate: float = 1e-4
    scratch_epochs: int = 40  # SAM: the whole small model
    scratch_learning_rate: float = 3e-4
    unet_epochs: int = 15  # U-Net: encoder frozen
    unet_learning_rate: float = 1e-3
    unet_fine_tune_epochs: int = 10  # U-Net: top encoder layers unfrozen, batch norm in inference mode
    unet_fine_tune_layers: int = 40
    unet_fine_tune_learning_rate: float = 1e-4
    early_stopping_patience: int = 8

    def validate(self):
        if min(self.decoder_epochs, self.unet_epochs) < 1 or min(self.scratch_epochs, self.unet_fine_tune_epochs) < 0:
            raise UserError("train.decoder_epochs and unet_epochs must be >= 1; scratch_epochs and "
                            "unet_fine_tune_epochs >= 0.")
        rates = (self.decoder_learning_rate, self.scratch_learning_rate, self.unet_learning_rate,
                 self.unet_fine_tune_learning_rate)
        if min(rates) <= 0:
            raise UserError("train learning rates must be positive.")


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


SMOKE = {
    "data": {"source": "synthetic", "image_size": 64, "batch_size": 8, "pastes_per_object": 2},
    "model": {"sam": "tiny", "scratch_sam": "tiny", "unet_source": "random", "unet_width_multiplier": 0.35},
    "train": {"decoder_epochs": 1, "scratch_epochs": 1, "unet_epochs": 1, "unet_fine_tune_epochs": 0,
              "early_stopping_patience": 5},
}

# ## The data
# Whatever the source, the lesson reads a VOC segmentation folder. Pasted data is written as one
# first: objects cut out by a brightness threshold, pasted with hard edges so the mask is exact.


def write_pasted_data(data, root):
    """Writes the pasted (or, for "synthetic", shapes-on-textures) VOC folder; -> (summary, objects shown)."""
    shutil.rmtree(root, ignore_errors=True)  # regenerated from the seed: the same files every time
    skipped = []
    if data.source == "synthetic":
        objects, labels = boxes.synthetic_shapes(per_class=6, seed=data.seed)
        backgrounds = boxes.textured_backgrounds(30, seed=data.seed)
    else:
        if not data.objects or not data.backgrounds:
            raise UserError("data.source = 'pasted' needs data.objects (a folder of class folders of objects on black) "
                            "and data.backgrounds (a folder of photos); see configs/segment-anything-assets.yaml, or "
                            "set data.source to a VOC-style segmentation folder of your own.")
        objects, labels, _, backgrounds, skipped = boxes.read_objects_and_backgrounds(
            data.objects, data.backgrounds, data.mask_threshold, data.skip_bad_files)
    # By source: every object and every background belongs to one split only (objects stratified by class).
    object_splits = images.stratified_split(labels, data.validation_fraction, data.test_fraction, data.seed)
    background_splits = images.stratified_split(np.zeros(len(backgrounds), int), data.validation_fraction,
                                                data.test_fraction, data.seed + 1)
    pastes = {"train": data.pastes_per_object, "validation": data.evaluation_pastes_per_object,
              "test": data.evaluation_pastes_per_object}
    counts = masks.write_pasted_segmentation(root, objects, backgrounds, object_splits, background_splits, pastes,
                                             data.seed, data.image_size, (data.scale_min, data.scale_max))
    summary = {
        "objects": len(objects), "backgrounds": len(backgrounds),
        "objects_per_split": {s: len(i) for s, i in object_splits.items()},
        "backgrounds_per_split": {s: len(i) for s, i in background_splits.items()},
        "images_per_split": counts, "mask_threshold": data.mask_threshold, "source_skipped": skipped,
    }
    return summary, objects[:: max(1, len(objects) // 8)][:8]


def load_data(data, work_dir):
    """-> ({split: (uint8 images [n, s, s, 3], uint8 masks [n, s, s])}, summary, objects shown)."""
    summary, shown = {"source": data.source, "synthetic": data.source == "synthetic"}, []
    root = data.source
    if data.source in ("pasted", "synthetic"):
        root = os.path.join(work_dir, "voc")
        summary["pasting"], shown = write_pasted_data(data, root)
    folder = masks.read_segmentation_folder(root, data.skip_bad_files)
    splits = folder.splits or images.stratified_split(np.zeros(len(folder.files), int), data.validation_fraction,
                                                      data.test_fraction, data.seed)
    for name, indices in splits.items():
        if not len(indices):
            raise UserError(f"The {name} split of {root!r} has no usable image.")
    skipped = folder.skipped + summary.get("pasting", {}).get("source_skipped", [])
    arrays = {split: images.load_array(masks.mask_dataset([folder.files[i] for i in indices],
                                                          [folder.masks[i] for i in indices], data.image_size).batch(64))
              for split, indices in splits.items()}
    summary.update(folder=root, split_sizes={s: len(a[0]) for s, a in arrays.items()}, num_skipped=len(skipped),
                   skipped=skipped, object_share={s: float(np.mean(a[1] == 1)) for s, a in arrays.items()})
    return arrays, summary, shown


def exact_boxes(mask_array):
    """[n, 4] boxes [x0, y0, x1, y1] (pixel edges) of the objects of [n, s, s] masks."""
    return np.stack([masks.mask_box(tf.constant(m)).numpy() for m in mask_array])


def random_flip(image, mask):
    """Flips an image and its mask left-right together, half the time."""
    return tf.cond(tf.random.uniform([]) < 0.5, lambda: (image[:, ::-1], mask[:, ::-1]), lambda: (image, mask))


def prompt_pairs(inputs, mask_array, data, batch_size, training, input_key):
    """Batched ({input_key: inputs, "boxes": [1, 2, 2]}, mask) pairs; training boxes are jittered afresh
    every epoch, and training images (not cached embeddings) are flipped left-right at random."""
    ds = tf.data.Dataset.from_tensor_slices((inputs, mask_array))
    if training:
        ds = ds.shuffle(len(mask_array), seed=data.seed, reshuffle_each_iteration=True)

    def with_box(x, mask):
        if training and input_key == "images":
            x, mask = random_flip(x, mask)
        box = masks.mask_box(mask)
        if training:
            box = masks.jitter_box(box, data.image_size, data.box_jitter)
        return {input_key: x, "boxes": tf.reshape(box, (1, 2, 2))}, mask

    return ds.map(with_box, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def unet_pairs(arrays, data, batch_size, training):
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if training:
        ds = ds.shuffle(len(arrays[0]), seed=data.seed, reshuffle_each_iteration=True)
        ds = ds.map(random_flip, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ## Evaluation
# Masks are compared at the lesson's image size: SAM's quarter-resolution logits are upsampled to
# it and thresholded at 0. Object against background is a two-class problem: mIoU is the mean of
# the object's and the background's IoU, pooled over all pixels of a split.


def segmentation_metrics(predicted, truth):
    """mIoU, Dice, pixel accuracy and the object's IoU of bool [n, s, s] predictions against uint8 masks."""
    predicted = np.asarray(predicted).astype(np.uint8)
    ignore = masks.IGNORE if np.any(truth == masks.IGNORE) else None
    return {"miou": metrics.mean_iou(truth, predicted, 2, ignore), "dice": metrics.mean_dice(truth, predicted, 2, ignore),
            "pixel_accuracy": metrics.pixel_accuracy(truth, predicted, 2, ignore),
            "object_iou": float(metrics.per_class_iou(truth, predicted, 2, ignore)[1])}


def sam_masks(prompt_decoder, embeddings, image_size, boxes=None, points=None, batch_size=16):
    """Thresholded masks [n, s, s] from SAM: mask 0 for a box prompt; for a single point, the one of the
    three alternatives with the highest predicted IoU (SAM's rule for ambiguous prompts)."""
    mask_side = prompt_decoder.input["masks"].shape[2]
    prompts = sam_models.no_prompts(len(embeddings), mask_side)
    if boxes is not None:
        prompts["boxes"] = tf.constant(np.asarray(boxes, "float32").reshape(-1, 1, 2, 2))
    if points is not None:
        prompts["points"] = tf.constant(np.asarray(points, "float32")[:, None])
        prompts["labels"] = tf.ones((len(embeddings), 1))
    outputs = prompt_decoder.predict({"image_embeddings": embeddings, **prompts}, batch_size=batch_size, verbose=0)
    chosen = np.zeros(len(embeddings), int) if boxes is not None else 1 + outputs["iou_pred"][:, 1:].argmax(-1)
    logits = outputs["masks"][np.arange(len(embeddings)), chosen]
    return keras.ops.convert_to_numpy(sam_models.upsample_masks(logits[:, None], image_size))[:, 0] > 0


def box_filled(box_array, image_size):
    """The box prompt alone as a mask: what a model must beat to have used the image at all."""
    rows, cols = np.arange(image_size)[None, :, None] + 0.5, np.arange(image_size)[None, None, :] + 0.5
    x0, y0, x1, y1 = (box_array[:, i, None, None] for i in range(4))
    return (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)


# ## The lesson

EVALUATED = ("validation", "test")  # the splits every model is scored on


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    strategy = train.get_strategy(config.train.strategy)
    data, m, t = config.data, config.model, config.train
    size = data.image_size

    with timings("data"):
        arrays, data_summary, shown_objects = load_data(data, checkpoints)
        batch_size = train.global_batch_size(data.batch_size, strategy)  # data.batch_size is per replica
        truth = {s: a[1] for s, a in arrays.items()}
        true_boxes = {s: exact_boxes(a[1]) for s, a in arrays.items()}
        points = {s: np.stack([masks.interior_point(mask) for mask in a[1]]) for s, a in arrays.items()}
    print(f"Data: {data_summary['folder']}, split sizes {data_summary['split_sizes']}, "
          f"{data_summary['num_skipped']} file(s) skipped.")
    predicted = {"box_prompt_alone": {s: box_filled(true_boxes[s], size) for s in EVALUATED}}
    results = {"box_prompt_alone": {s: segmentation_metrics(m, truth[s]) for s, m in predicted["box_prompt_alone"].items()}}
    histories, prompted, models = {}, {}, {}

    # 1. The U-Net: a pretrained encoder frozen, then its top layers fine-tuned.
    with timings("train_unet"), train.model_scope(strategy):
        backbone = build_backbone(m.unet_backbone, m.unet_source, size, width_multiplier=m.unet_width_multiplier)
        unet = build_unet(backbone, m.unet_backbone, size)
        backbone.features.trainable = not backbone.pretrained
        pipelines = {s: unet_pairs(a, data, batch_size, training=s == "train") for s, a in arrays.items()}
        _compile(unet, t.unet_learning_rate, strategy, loss=sam_models.dice_focal_loss)
        histories["unet"] = train.fit_stage(unet, pipelines["train"], pipelines["validation"], t.unet_epochs,
                                            os.path.join(checkpoints, "unet"), t.early_stopping_patience, strategy)
        if t.unet_fine_tune_epochs and backbone.pretrained:
            backbone.fine_tune_top(t.unet_fine_tune_layers)
            _compile(unet, t.unet_fine_tune_learning_rate, strategy, loss=sam_models.dice_focal_loss)
            histories["unet_fine_tuned"] = train.fit_stage(
                unet, pipelines["train"], pipelines["validation"], t.unet_fine_tune_epochs,
                os.path.join(checkpoints, "unet_fine_tuned"), t.early_stopping_patience, strategy)
    predicted["unet"] = {s: unet.predict(arrays[s][0], batch_size=batch_size, verbose=0) > 0 for s in EVALUATED}
    results["unet"] = {s: segmentation_metrics(m, truth[s]) for s, m in predicted["unet"].items()}

    # 2. SAM's mask decoder fine-tuned on cached image embeddings, the image and prompt encoders frozen.
    with timings("train_sam_decoder"), train.model_scope(strategy):
        sam = sam_models.build_sam(m.sam)
        encoder = sam_models.image_encoder_model(sam, size)
        decoder = sam_models.prompt_decoder_model(sam, size)
        with timings("sam_embeddings"):
            embeddings = {s: cached_embeddings(encoder, a[0], os.path.join(checkpoints, "embeddings", f"{s}.npy"))
                          for s, a in arrays.items()}
        sam.backbone.prompt_encoder.trainable = False
        decoder_model = sam_models.PromptedSAM(decoder, name="sam_decoder")
        pipelines = {s: prompt_pairs(embeddings[s], truth[s], data, batch_size, s == "train", "image_embeddings")
                     for s in arrays}
        decoder_model(next(iter(pipelines["validation"]))[0])  # builds it before a resume restores its weights
        _compile(decoder_model, t.decoder_learning_rate, strategy)
        histories["sam_decoder"] = train.fit_stage(decoder_model, pipelines["train"], pipelines["validation"],
                                                   t.decoder_epochs, os.path.join(checkpoints, "sam_decoder"),
                                                   t.early_stopping_patience, strategy)
    models["sam_fine_tuned"] = (encoder, decoder, sam)
    prompted["sam_fine_tuned"] = embeddings

    # 3. A small SAM trained whole from scratch (the mask-prompt downscaler has nothing to learn from boxes).
    if m.scratch_sam and t.scratch_epochs:
        with timings("train_sam_scratch"), train.model_scope(strategy):
            scratch = sam_models.build_sam(m.scratch_sam)
            scratch.backbone.prompt_encoder.mask_downscaler.trainable = False
            scratch_encoder = sam_models.image_encoder_model(scratch, size)
            scratch_decoder = sam_models.prompt_decoder_model(scratch, size)
            scratch_model = sam_models.PromptedSAM(scratch_decoder, image_encoder=scratch_encoder, name="sam_scratch")
            pipelines = {s: prompt_pairs(a[0], truth[s], data, batch_size, s == "train", "images") for s, a in arrays.items()}
            scratch_model(next(iter(pipelines["validation"]))[0])
            _compile(scratch_model, t.scratch_learning_rate, strategy)
            histories["sam_scratch"] = train.fit_stage(scratch_model, pipelines["train"], pipelines["validation"],
                                                       t.scratch_epochs, os.path.join(checkpoints, "sam_scratch"),
                                                       t.early_stopping_patience, strategy)
        models["sam_scratch"] = (scratch_encoder, scratch_decoder, scratch)
        prompted["sam_scratch"] = {s: scratch_encoder.predict(arrays[s][0], batch_size=batch_size, verbose=0)
                                   for s in EVALUATED}

    for name, (_, decoder_of, _) in models.items():
        predicted[name] = {s: sam_masks(decoder_of, prompted[name][s], size, boxes=true_boxes[s]) for s in EVALUATED}
        results[name] = {s: segmentation_metrics(m, truth[s]) for s, m in predicted[name].items()}
        for s in EVALUATED:  # one click on the object instead of a box
            point_masks = sam_masks(decoder_of, prompted[name][s], size, points=points[s])
            results[name][s]["point_prompt_miou"] = segmentation_metrics(point_masks, truth[s])["miou"]

    # Export the SAM that does better on validation (never test): its image encoder, prompt decoder and TFLite decoder.
    chosen = max(models, key=lambda name: results[name]["validation"]["miou"])
    encoder, decoder, chosen_sam = models[chosen]
    test_images = arrays["test"][0]
    with timings("export"):
        def score(mask_logits):
            upsampled = keras.ops.convert_to_numpy(sam_models.upsample_masks(mask_logits[:, :1], size))[:, 0] > 0
            return {"test_miou": segmentation_metrics(upsampled, truth["test"])["miou"]}

        export_metrics = export.export_sam(encoder, decoder, run_dir, test_images, true_boxes["test"], points["test"], score)
    speed = measure_speed(encoder, decoder, test_images[:1], true_boxes["test"][:1],
                          os.path.join(export.run_export_dir(run_dir), "prompt_decoder.tflite"))

    report = {
        "lesson": "segment-anything",
        "config": dataclasses.asdict(config),
        "data": data_summary,
        "models": {
            "unet": {"backbone": m.unet_backbone, "source": backbone.source, "pretrained": backbone.pretrained,
                     "parameters": unet.count_params()},
            **{name: {"sam": sam_of.source, "pretrained": sam_of.pretrained, "image_size": sam_of.image_size,
                      "parameters": sam_of.count_params(),
                      "trained": "mask decoder" if name == "sam_fine_tuned" else "all but the mask-prompt downscaler"}
               for name, (_, _, sam_of) in models.items()},
        },
        "note": _honesty_note(m, models, backbone, data_summary),
        "distribution": train.describe_strategy(strategy, data.batch_size),
        "metrics": results,
        "exported_sam": chosen,
        "export": export_metrics,
        "speed_seconds": speed,
        "timings_seconds": dict(timings),
    }
    _plots(run_dir, report, histories, arrays, true_boxes, points, predicted, models[chosen], shown_objects)
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def _compile(model, learning_rate, strategy, loss=None):
    model.compile(optimizer=keras.optimizers.AdamW(train.scaled_learning_rate(learning_rate, strategy)), loss=loss)


def cached_embeddings(encoder, image_array, path):
    """The image encoder's embeddings of `image_array`, computed once and kept at `path` (a resumed run
    reads them back); written under a temporary name, then renamed."""
    if os.path.isfile(path):
        cached = np.load(path)
        if cached.shape[0] == len(image_array):
            return cached
    embeddings = encoder.predict(image_array, batch_size=8, verbose=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    train.write_atomically(path, lambda tmp: np.save(tmp, embeddings))
    return embeddings


def measure_speed(encoder, decoder, image, box, tflite_path, repeats=20):
    """Median seconds: the image encoder per image, the prompt decoder per box prompt (Keras, traced
    once as a tf.function) and the TFLite decoder per box prompt."""
    mask_side = decoder.input["masks"].shape[2]
    embedding = encoder(tf.constant(image))
    prompts = {**sam_models.no_prompts(1, mask_side), "boxes": tf.constant(box.reshape(1, 1, 2, 2), tf.float32)}
    encode, decode = tf.function(encoder), tf.function(decoder)
    runner = export._tflite_interpreter(tflite_path).get_signature_runner("box")
    steps = {
        "image_encoder_keras": lambda: encode(tf.constant(image)).numpy(),
        "prompt_decoder_keras": lambda: decode({"image_embeddings": embedding, **prompts})["masks"].numpy(),
        "prompt_decoder_tflite": lambda: runner(image_embeddings=embedding.numpy(), boxes=prompts["boxes"].numpy()),
    }
    seconds = {}
    for name, step in steps.items():
        step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        seconds[name] = float(np.median(times))
    return seconds


def _honesty_note(m, models, backbone, data_summary):
    notes = []
    for name, (_, _, sam_of) in models.items():
        if not sam_of.pretrained:
            what = ("its image encoder is random and frozen, so the decoder learns from features of an untrained "
                    "network" if name == "sam_fine_tuned" else "it starts from nothing")
            notes.append(f"{name}: SAM {sam_of.source} is randomly initialised (no SAM weights here): {what}.")
    if not backbone.pretrained:
        notes.append("The U-Net's encoder is randomly initialised: it shows the pipeline, not transfer learning.")
    if data_summary.get("synthetic"):
        notes.append("The data is generated shapes on generated textures, not real images.")
    elif data_summary["source"] == "pasted":
        notes.append("The images are real object photos pasted onto real photos: the masks are exact, but the "
                     "scenes are composites, easier than natural photos.")
    return " ".join(notes)


def _plots(run_dir, report, histories, arrays, true_boxes, points, predicted, chosen, shown_objects):
    starts, curves = {}, {}
    for name, history in histories.items():
        base = name.replace("_fine_tuned", "")
        starts[name] = 1 if name == base else len(histories[base]["loss"]) + 1
        curves[name] = (starts[name], history)
    viz.plot_training_curves(curves, os.path.join(run_dir, "training_curves.png"),
                             "segment-anything loss: U-Net Dice + focal; SAM that on two masks + IoU error",
                             metrics=("loss",))
    test_images, test_truth = arrays["test"]
    shown = np.unique(np.linspace(0, len(test_images) - 1, min(6, len(test_images))).astype(int))
    rows = {"truth": [{"image": test_images[i], "mask": test_truth[i] == 1, "box": true_boxes["test"][i]} for i in shown]}
    for name, by_split in predicted.items():
        masks_of = by_split["test"]
        rows[name] = [{"image": test_images[i], "mask": masks_of[i], "box": true_boxes["test"][i],
                       "caption": f"IoU {segmentation_metrics(masks_of[i:i + 1], test_truth[i:i + 1])['object_iou']:.2f}"}
                      for i in shown]
    viz.plot_mask_overlays(rows, os.path.join(run_dir, "masks.png"), "Test split: box prompt (yellow), mask (cyan); "
                           "object IoU per image")
    _plot_prompts(run_dir, report, test_images[shown[0]], test_truth[shown[0]], true_boxes["test"][shown[0]],
                  points["test"][shown[0]], chosen)
    if shown_objects:
        threshold = report["data"]["pasting"]["mask_threshold"]
        viz.plot_mask_overlays({"objects": [{"image": o, "mask": mask, "caption": f"threshold {threshold}"}
                                            for o, mask in shown_objects]},
                               os.path.join(run_dir, "object_masks.png"), "Object masks cut by the brightness threshold")


def _plot_prompts(run_dir, report, image, truth, box, point, chosen):
    """One test image prompted every way SAM takes: a point (its three masks), a box, and the box's own
    low-resolution mask fed back as a mask prompt."""
    encoder, decoder, _ = chosen
    size = image.shape[0]
    mask_side = decoder.input["masks"].shape[2]
    embedding = encoder.predict(image[None], verbose=0)

    def decode(**prompts):
        outputs = decoder.predict({"image_embeddings": embedding, **sam_models.no_prompts(1, mask_side), **prompts},
                                  verbose=0)
        masks_up = keras.ops.convert_to_numpy(sam_models.upsample_masks(outputs["masks"], size))[0] > 0
        return outputs["masks"], masks_up, outputs["iou_pred"][0]

    box_prompt = tf.constant(np.asarray(box, "float32").reshape(1, 1, 2, 2))
    _, point_masks, point_iou = decode(points=tf.constant(point[None, None]), labels=tf.ones((1, 1)))
    box_logits, box_masks, box_iou = decode(boxes=box_prompt)
    _, refined, refined_iou = decode(boxes=box_prompt, masks=tf.constant(box_logits[:, :1, ..., None]))
    clicked = [[point[0], point[1], 1]]
    cells = [{"image": image, "mask": truth == 1, "caption": "truth"}]
    cells += [{"image": image, "mask": point_masks[k], "points": clicked, "caption": f"point: mask {k}, IoU~{point_iou[k]:.2f}"}
              for k in (1, 2, 3)]
    cells += [{"image": image, "mask": box_masks[0], "box": box, "caption": f"box: IoU~{box_iou[0]:.2f}"},
              {"image": image, "mask": refined[0], "box": box, "caption": f"box + its mask: IoU~{refined_iou[0]:.2f}"}]
    viz.plot_mask_overlays({report["exported_sam"]: cells}, os.path.join(run_dir, "prompts.png"),
                           "Prompts: a point gives three masks (IoU~ = predicted IoU); a box gives one")


# ## Prompting an exported run
# An image of any shape is resized so its longest side is the run's image size and padded
# bottom-right to a square, as SAM's own preprocessing does; prompts are scaled with it, and the
# mask comes back at the image's own size.


def segment_files(run_dir, files, box=None, points=(), fmt="saved_model", out_dir=None):
    """Masks of image files from a run's exported SAM, prompted by a box [x0, y0, x1, y1] or points
    [(x, y, label)] (label 1 object, 0 background) in each image's own pixels. Writes NAME.mask.png
    (0/255) and NAME.png (the prompt, the chosen mask and the alternatives) to `out_dir`
    (default RUN_DIR/predictions); returns a result per file. A SavedModel is a program: only
    prompt runs you trust."""
    if (box is None) == (not points):
        raise UserError("Give one prompt: --box X0,Y0,X1,Y1, or one or more --point X,Y[,LABEL].")
    model = export.SAMExport(run_dir, fmt)
    size = model.image_size
    out_dir = out_dir or os.path.join(run_dir, "predictions")
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for path in files:
        image = images.read_image_file(path)
        height, width = image.shape[:2]
        _check_prompt(path, width, height, box, points)
        scale = size / max(height, width)
        inner = (round(height * scale), round(width * scale))
        square = np.zeros((size, size, 3), np.uint8)
        square[: inner[0], : inner[1]] = images.resize_image(image, inner).numpy()
        embedding = model.encode(square[None])
        if box is not None:
            outputs = model.decode(embedding, boxes=np.asarray(box) * scale)
        else:
            outputs = model.decode(embedding, points=np.asarray(points)[:, :2] * scale, labels=np.asarray(points)[:, 2])
        iou = outputs["iou_pred"][0]
        chosen = 1 + int(iou[1:].argmax()) if box is None and len(points) == 1 else 0  # SAM's rule, as in sam_masks
        logits = sam_models.upsample_masks(outputs["masks"], size)[0, :, : inner[0], : inner[1], None]
        mask_stack = keras.ops.convert_to_numpy(keras.ops.image.resize(logits, (height, width)))[..., 0] > 0
        name = os.path.splitext(os.path.basename(path))[0]
        mask_path, plot_path = os.path.join(out_dir, f"{name}.mask.png"), os.path.join(out_dir, f"{name}.png")
        keras.utils.save_img(mask_path, mask_stack[chosen, :, :, None].astype(np.uint8) * 255, scale=False)
        prompt = {"box": box} if box is not None else {"points": [list(p) for p in points]}
        cells = [{"image": image, "mask": mask_stack[k], **prompt,
                  "caption": f"mask {k}{' (chosen)' if k == chosen else ''}: IoU~{iou[k]:.2f}"} for k in range(len(iou))]
        viz.plot_mask_overlays({os.path.basename(path): cells}, plot_path,
                               f"{fmt}: prompt (yellow box, green object / red background points), IoU~ = predicted IoU")
        mask = mask_stack[chosen]
        rows, cols = np.nonzero(mask)
        results.append({"file": path, "format": fmt, **prompt, "chosen_mask": chosen,
                        "predicted_iou": [round(float(v), 4) for v in iou], "mask_pixels": int(mask.sum()),
                        "mask_fraction": round(float(mask.mean()), 4),
                        "mask_box": [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1] if mask.any() else None,
                        "mask_png": mask_path, "plot_png": plot_path})
    return results


def _check_prompt(path, width, height, box, points):
    if box is not None:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise UserError(f"--box {list(box)} does not fit {path!r} ({width} x {height} pixels): it needs "
                            "0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height.")
    for x, y, label in points:
        if not (0 <= x <= width and 0 <= y <= height) or label not in (0, 1):
            raise UserError(f"--point {x},{y},{label} does not fit {path!r} ({width} x {height} pixels): x and y "
                            "must lie in the image and the label be 1 (object) or 0 (background).")


def summary_markdown(report):
    data = report["data"]
    lines = [
        "# segment-anything run", "",
        f"Data: {data['source']} ({data['folder']}), split sizes {data['split_sizes']}, {data['num_skipped']} file(s) "
        "skipped. Object against background; masks compared at the images' size.", "",
    ]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| model | parameters | validation mIoU | test mIoU | test Dice | test pixel acc | test object IoU | "
              "test mIoU, one point |", "|---|---|---|---|---|---|---|---|"]
    for name, result in report["metrics"].items():
        v, t = result["validation"], result["test"]
        parameters = report["models"].get(name, {}).get("parameters", "")
        point = f"{t['point_prompt_miou']:.3f}" if "point_prompt_miou" in t else ""
        lines.append(f"| {name} | {parameters} | {v['miou']:.3f} | {t['miou']:.3f} | {t['dice']:.3f} | "
                     f"{t['pixel_accuracy']:.3f} | {t['object_iou']:.3f} | {point} |")
    e = report["export"]
    lines += ["", f"Exported: {report['exported_sam']} (image size {e['image_size']}).", "",
              "| export | max abs diff vs Keras | test mIoU (box prompts) | size (KB) |", "|---|---|---|---|",
              f"| image_encoder (SavedModel) | {e['image_encoder']['max_abs_diff']:.1e} | | "
              f"{e['image_encoder']['size_bytes'] / 1024:.0f} |"]
    for name in ("prompt_decoder", "prompt_decoder_tflite"):
        lines.append(f"| {name} | {max(e[name]['max_abs_diff'].values()):.1e} | {e[name]['test_miou']:.3f} | "
                     f"{e[name]['size_bytes'] / 1024:.0f} |")
    s = report["speed_seconds"]
    lines += ["", f"Milliseconds (median): image encoder {1e3 * s['image_encoder_keras']:.2f} per image; a box prompt "
              f"{1e3 * s['prompt_decoder_keras']:.2f} (Keras), {1e3 * s['prompt_decoder_tflite']:.2f} (TFLite).", "",
              "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
