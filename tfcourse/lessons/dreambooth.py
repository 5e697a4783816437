"""
Title: DreamBooth: teach a text-to-image model one subject, and measure what it forgot
Description: Fine-tune a trained text-to-image model on 4 images of one subject, bound to a rare
identifier ("a sks seven"), in three arms: class prior preservation on images the model itself drew
for the class in every colour and side (the paper's recipe), prior preservation on real images of
the class (from the base model's training set), and no prior. Measure subject fidelity (embedding
similarity of "a sks seven" samples to the subject's images, and the share drawn in the subject's
colour) and prior drift (a classifier's accuracy on plain class prompts), before and after.

    tfcourse run dreambooth --set model.base_run=saved_models/text-to-image   # the small model
    tfcourse run dreambooth --smoke    # a random tiny model and glyphs: minutes on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run dreambooth --config configs/dreambooth-assets.yaml

The subject is one real handwritten digit (one MNIST image, never seen in training) painted in one
colour, on 4 photo crops at either side. DreamBooth's recipe (Ruiz et al. 2023):
- the instance prompt is "a [identifier] [class]"; the identifier is a token the model has never
  been trained on, so it carries no meaning that fine-tuning has to overwrite;
- prior preservation: the model draws images of the class ("a red seven on the left", ...) before
  fine-tuning, and trains on them beside the instance images (under their captions and under the
  bare "a seven"), weighted prior_loss_weight, so "a seven" keeps meaning any seven, not this one;
- the UNet is fine-tuned, the text encoder optionally (`train.text_encoder`), with the base
  model's own loss (the digit's pixels weighted up, 10 % of captions emptied).

A small model's own samples are a weaker prior than Stable Diffusion's: they are sharpened by
guidance and blotchy behind the digit, and fine-tuning on them moves the model towards them (drawn
unguided, at guidance 1, most are not even sevens). So the lesson also runs the prior on real class
images, which the paper could not do for Stable Diffusion (its training set is not at hand) and which
a course can: the comparison shows what the prior term is for.

The run reloads the text-to-image run's denoiser and judge (`.keras`, Keras safe mode).
"""

import dataclasses
import os
import typing

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, runs, train, viz
from tfcourse.data import captioned_digits as captions
from tfcourse.lessons import text_to_image
from tfcourse.models import diffusion
from tfcourse.models.backbones import build_backbone

ARMS = ("with_prior", "with_real_prior", "without_prior")
CAPTION_DROPOUT = text_to_image.DataConfig.caption_dropout  # as the base model was trained
DIGIT_LOSS_WEIGHT = text_to_image.TrainConfig.digit_loss_weight  # likewise

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    digits: str = "tfds:mnist"  # as text-to-image: the subject is a digit of its test split
    digits_split: str = "train"
    tfds_data_dir: str = ""
    backgrounds: str = "BSR/BSDS500/data/images/train"
    max_digits: int = 10000
    subject_digit: int = 7
    subject_colour: typing.Literal[tuple(captions.COLOURS)] = "red"
    instance_images: int = 4
    class_images: int = 100  # drawn by the model itself for the class in every colour and side, before fine-tuning
    class_image_guidance: float = 12.0  # the guidance scale they are drawn at
    seed: int = 42

    def validate(self):
        if not 0 <= self.subject_digit <= 9:
            raise UserError(f"data.subject_digit = {self.subject_digit}: a digit 0-9.")
        if not 1 <= self.instance_images <= 20 or self.class_images < 1 or self.class_image_guidance < 0:
            raise UserError("data.instance_images must be 1-20 (DreamBooth uses 3-5), data.class_images >= 1, "
                            "data.class_image_guidance >= 0.")


@dataclasses.dataclass
class ModelConfig:
    base_run: str = "saved_models/text-to-image"  # a text-to-image run directory; "" starts from a random tiny model
    embedding_source: str = "imagenet"  # MobileNetV2 for subject fidelity: imagenet | random | a .tflite classifier


@dataclasses.dataclass
class TrainConfig:
    strategy: typing.Literal["auto", "default", "mirrored", "tpu", "multi_worker"] = "auto"
    steps: int = 400
    batch_size: int = 8  # per replica: half instance images, half class images (with prior)
    learning_rate: float = 1e-5  # 5e-5 over 400 steps: the identifier's samples copied one instance image
    prior_loss_weight: float = 1.0
    text_encoder: bool = False  # also fine-tune the text encoder
    seed: int = 42  # the fine-tuning's batches and noise: another seed is another replicate (data.seed stays the base run's)

    def validate(self):
        if self.steps < 1 or self.batch_size < 2 or self.learning_rate <= 0 or self.prior_loss_weight <= 0:
            raise UserError("train.steps >= 1, batch_size >= 2, learning_rate > 0 and prior_loss_weight > 0, please.")


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sample: text_to_image.SampleConfig = dataclasses.field(default_factory=lambda: text_to_image.SampleConfig(
        alignment_captions=48))


SMOKE = {
    "data": {"digits": "synthetic", "backgrounds": "synthetic", "max_digits": 200, "subject_digit": 2,
             "class_images": 8},
    "model": {"base_run": "", "embedding_source": "random"},
    "train": {"steps": 2, "batch_size": 4},
    "sample": {"num_steps": 6, "alignment_captions": 8},
}

# ## The subject and the base model


def subject_images(data, splits, photos_of_test, rng):
    """The subject: the first test-split image of `subject_digit`'s MNIST digit, redrawn in the
    subject's colour on `instance_images` test photos, alternating sides."""
    test = splits["test"]
    first = int(np.nonzero(test.attributes[:, 0] == data.subject_digit)[0][0])
    colour = list(captions.COLOURS).index(data.subject_colour)
    attributes = np.array([[data.subject_digit, colour, i % 2] for i in range(data.instance_images)])
    digits, photos = photos_of_test
    photo_ids = rng.choice(np.unique(test.photo_ids), data.instance_images)
    images, masks = captions.render(np.repeat(digits[test.digit_ids[first]][None], data.instance_images, 0), attributes,
                                    photos, photo_ids, seed=data.seed)
    return images, masks


def load_base(model):
    """-> (denoiser, judge, note) from a text-to-image run, or random tiny ones."""
    if not model.base_run:
        denoiser, _, _ = diffusion.build_small("tiny", len(captions.VOCABULARY) + 2, captions.SEQUENCE_LENGTH)
        return denoiser, text_to_image.build_attribute_classifier(10), (
            "The base model and the judge are random (no base_run): the figures show the pipeline runs, not DreamBooth.")
    return (*text_to_image.load_run_models(model.base_run), "")


def subject_embedder(source):
    """uint8 [n, 32, 32, 3] -> L2-normalised MobileNetV2 features at 96 px (the DreamBooth paper uses
    DINO features; an ImageNet network plays that part here)."""
    backbone = build_backbone("mobilenet_v2", source, 96)
    images = keras.Input((captions.IMAGE_SIZE, captions.IMAGE_SIZE, 3), dtype="uint8")
    x = keras.layers.Resizing(96, 96)(keras.ops.cast(images, "float32"))
    x = backbone.features(backbone.rescaling(x), training=False)
    return keras.Model(images, keras.layers.UnitNormalization()(x), name="subject_embedder")


# ## Training: instance images and the model's own class images, weighted


def dreambooth_pipeline(instance, classes, seed, tokenize, alphas, time_width, batch_size, prior_weight):
    """Endless batches ({inputs}, v, pixel weights): "a sks [class]" instance images, and (with
    prior preservation) the class images `classes` ({"images", "masks", "attributes"}) under their
    captions, weighted `prior_weight`.

    The loss is the base model's: each pixel weighs 1 + DIGIT_LOSS_WEIGHT x the digit's alpha there.
    Fine-tuned on plain MSE, the photo behind outweighs the digit and the model's digits broke up in
    both arms, even at a learning rate of 1e-5."""
    digit = instance["digit"]
    instance_prompts = [captions.caption(digit, identifier=True)] * len(instance["images"])
    # Each class image twice: under its own caption and under the bare class prompt "a seven"
    prior_prompts = [captions.caption(*a) for a in classes["attributes"]] + [captions.caption(digit)] * len(classes["images"])
    mix = diffusion.dreambooth_mix((instance["images"], tokenize(instance_prompts).numpy(), instance["masks"]),
                                   (np.concatenate([classes["images"]] * 2), tokenize(prior_prompts).numpy(),
                                    np.concatenate([classes["masks"]] * 2)),
                                   batch_size, prior_weight, seed)

    empty = tokenize([""])

    def noised(index, batch):
        images, tokens, masks, weights = batch
        batch_seed = tf.stack([tf.cast(index, tf.int32), seed])
        # As in the base model's training, some captions are emptied, so the empty-caption prediction
        # that guidance subtracts moves with the captioned one
        dropped = tf.random.stateless_uniform([tf.shape(tokens)[0], 1], seed=batch_seed + [0, 3]) < CAPTION_DROPOUT
        inputs, v = diffusion.training_batch(images, tf.where(dropped, empty, tokens), alphas, time_width, batch_seed)
        return inputs, v, weights * (1 + DIGIT_LOSS_WEIGHT * masks)

    return mix.enumerate().map(noised, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def compile_fine_tuning(denoiser, t, strategy):
    """-> the optimizer's fresh state: each arm starts from it, and both share one traced train step."""
    train.set_trainable(denoiser.get_layer("text_encoder"), t.text_encoder)
    denoiser.compile(optimizer=keras.optimizers.AdamW(train.scaled_learning_rate(t.learning_rate, strategy)), loss="mse")
    denoiser.optimizer.build(denoiser.trainable_variables)
    return [v.numpy() for v in denoiser.optimizer.variables]


def fine_tune(denoiser, fresh_optimizer, pipelines, t, strategy, stage_dir):
    """DreamBooth: the UNet (and optionally the text encoder) trained on the weighted pipeline for
    `steps`, in 4 epochs (each backed up, so an interrupted run resumes), keeping the last weights.
    Keeping the epoch of best validation loss instead (2 batches of a mix that is mostly instance
    images) picked epoch 3 or 4 by chance, and "a seven"'s accuracy varied 0.46-0.81 between runs of
    one config."""
    for variable, value in zip(denoiser.optimizer.variables, fresh_optimizer):
        variable.assign(value)
    steps_per_epoch = max(1, t.steps // 4)
    return train.fit_stage(denoiser, pipelines["train"].take(steps_per_epoch), pipelines["validation"].take(2),
                           -(-t.steps // steps_per_epoch), stage_dir, patience=None, strategy=strategy)


# ## Measuring


def measure(sampler, judge, embed, subject, data, s, seed):
    """Subject fidelity and prior drift of one model."""
    n = s.alignment_captions
    digit = data.subject_digit
    colour = list(captions.COLOURS).index(data.subject_colour)
    identifier_images = text_to_image.generate(sampler, [captions.caption(digit, identifier=True)] * n, seed, s)
    class_images = text_to_image.generate(sampler, [captions.caption(digit)] * n, seed + 1, s)
    asked = np.stack([np.full(n, digit), np.arange(n) % len(captions.COLOURS), (np.arange(n) // 4) % 2], -1)
    controlled = text_to_image.generate(sampler, [captions.caption(*a) for a in asked], seed + 2, s)
    similarity = embed.predict(identifier_images, verbose=0) @ embed.predict(subject, verbose=0).T
    identifier_seen, class_seen = (judge.predict(images, verbose=0) for images in (identifier_images, class_images))
    return {
        "subject_similarity": float(similarity.mean()),
        "identifier_in_subject_colour": float((identifier_seen["colour"].argmax(-1) == colour).mean()),
        "class_prompt_digit_accuracy": float((class_seen["digit"].argmax(-1) == digit).mean()),
        "class_prompt_in_subject_colour": float((class_seen["colour"].argmax(-1) == colour).mean()),
        "class_prompts_with_attributes": text_to_image.judge(judge, controlled, asked),
        "images": {"identifier": identifier_images[:8], "class": class_images[:8]},
    }


# ## The lesson


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    strategy = train.get_strategy(config.train.strategy)
    data, m, t, s = config.data, config.model, config.train, config.sample
    rng = np.random.default_rng(data.seed)

    with timings("data"):
        splits, sources = load_subject_sources(data)
        subject, subject_masks = subject_images(data, splits, sources, rng)
        tokenize = captions.tokenizer()
        batch_size = train.global_batch_size(t.batch_size, strategy)
    with train.model_scope(strategy):
        base, judge, base_note = load_base(m)
        embed = subject_embedder(m.embedding_source)
    base_weights = base.get_weights()
    alphas = diffusion.cosine_alphas_cumprod()
    time_width = base.input["timestep_embedding"].shape[-1]

    def sampler_of(denoiser):
        return diffusion.pixel_sampler(denoiser.get_layer("unet"), denoiser.get_layer("text_encoder"), tokenize, alphas)

    # 1. Before: what the model draws for the identifier and for the class, and its class images.
    with timings("before"):
        results = {"before": measure(sampler_of(base), judge, embed, subject, data, s, seed=100)}
        class_images = cached_class_images(sampler_of(base), data, s, os.path.join(checkpoints, "class_images.npy"))
    attributes = class_attributes(data.subject_digit, len(class_images))
    priors = {"with_prior": {"images": class_images, "attributes": attributes,
                             "masks": captions.estimated_masks(class_images, attributes[:, 1])},
              "with_real_prior": real_class_images(splits["train"], data.subject_digit, data.class_images, rng)}

    # 2. Fine-tune from the same base: with prior preservation on the model's own class images (the
    # paper's recipe), on real ones (from the base model's training images), and without.
    histories = {}
    instance = {"images": subject, "masks": subject_masks, "digit": data.subject_digit}
    with train.model_scope(strategy):
        fresh_optimizer = compile_fine_tuning(base, t, strategy)
    for arm in ARMS:
        prior = t.prior_loss_weight if arm in priors else 0.0
        base.set_weights(base_weights)
        # without_prior: prior weight 0, so dreambooth_mix draws no class images (any set will do)
        pipelines = {name: dreambooth_pipeline(instance, priors.get(arm, priors["with_prior"]), t.seed + k, tokenize,
                                               alphas, time_width, batch_size, prior)
                     for k, name in enumerate(("train", "validation"))}
        with timings(f"train_{arm}"), train.model_scope(strategy):
            histories[arm] = fine_tune(base, fresh_optimizer, pipelines, t, strategy, os.path.join(checkpoints, arm))
        with timings(f"measure_{arm}"):
            results[arm] = measure(sampler_of(base), judge, embed, subject, data, s, seed=100)

    report = {
        "lesson": "dreambooth",
        "config": dataclasses.asdict(config),
        "subject": {"digit": captions.DIGITS[data.subject_digit], "colour": data.subject_colour,
                    "instance_prompt": captions.caption(data.subject_digit, identifier=True),
                    "class_prompt": captions.caption(data.subject_digit), "instance_images": len(subject),
                    "class_images": len(class_images)},
        "base": m.base_run or "random tiny model",
        "note": base_note,
        "distribution": train.describe_strategy(strategy, t.batch_size),
        "results": {arm: {k: v for k, v in r.items() if k != "images"} for arm, r in results.items()},
        "timings_seconds": dict(timings),
    }
    _plot(run_dir, subject, class_images, results, report)
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def load_subject_sources(data):
    """The captioned-digit splits of text-to-image (the same digits and photos, so the subject is a test
    digit the base model never saw), and the raw digits and photos to redraw it from."""
    settings = text_to_image.DataConfig(digits=data.digits, digits_split=data.digits_split, tfds_data_dir=data.tfds_data_dir,
                                        backgrounds=data.backgrounds, max_digits=data.max_digits, renders_per_digit=1,
                                        seed=data.seed)
    sources = text_to_image.load_sources(settings)
    splits, _, _ = text_to_image.load_splits(settings, sources)
    digits, _, photos, _ = sources
    return splits, (digits, photos)


def class_prompts(digit, count):
    """The prompts the class images are drawn for: the class in every colour and side ("a red seven
    on the left", ...), not the bare class prompt "a seven": that is about 1 in 18 of the base model's
    training captions, and its samples were saturated collages; trained on as the prior, they turned
    "a seven" into collages too (digit right 0.000 after fine-tuning)."""
    return [captions.caption(*a) for a in class_attributes(digit, count)]


def class_attributes(digit, count):
    """(digit, colour, side) of the class images: every colour, then every side, in turn."""
    i = np.arange(count)
    return np.stack([np.full(count, digit), i % len(captions.COLOURS), (i // len(captions.COLOURS)) % 2], -1)


def real_class_images(train_split, digit, count, rng):
    """`count` training images of the class (the base model saw them), with their masks and attributes."""
    candidates = np.nonzero(train_split.attributes[:, 0] == digit)[0]
    if len(candidates) < count:
        raise UserError(f"data.class_images = {count}, but the training split has {len(candidates)} images of the class.")
    chosen = rng.choice(candidates, count, replace=False)
    return {"images": train_split.images[chosen], "masks": train_split.masks[chosen],
            "attributes": train_split.attributes[chosen]}


def cached_class_images(sampler, data, s, path):
    """The model's own images for `class_prompts`, drawn before fine-tuning (kept for a resumed run)."""
    if os.path.isfile(path):
        return np.load(path)
    images = text_to_image.generate(sampler, class_prompts(data.subject_digit, data.class_images), 7, s,
                                    guidance=data.class_image_guidance)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    train.write_atomically(path, lambda tmp: np.save(tmp, images))
    return images


def _plot(run_dir, subject, class_images, results, report):
    rows = {"subject (instance images)": subject, "class images (drawn before)": class_images[:8]}
    for arm, r in results.items():
        rows[f"{arm}: '{report['subject']['instance_prompt']}'"] = r["images"]["identifier"]
        rows[f"{arm}: '{report['subject']['class_prompt']}'"] = r["images"]["class"]
    viz.plot_image_rows(rows, [], os.path.join(run_dir, "dreambooth.png"),
                        "DreamBooth: the subject, then each model's samples for the instance and the class prompt")


def summary_markdown(report):
    lines = ["# dreambooth run", "", f"Subject: {report['subject']}. Base: {report['base']}.", ""]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| model | subject similarity | identifier in subject colour | class prompt: digit right | "
              "class prompt in subject colour | class prompts with attributes: all three |", "|---|---|---|---|---|---|"]
    for arm, r in report["results"].items():
        lines.append(f"| {arm} | {r['subject_similarity']:.3f} | {r['identifier_in_subject_colour']:.3f} | "
                     f"{r['class_prompt_digit_accuracy']:.3f} | {r['class_prompt_in_subject_colour']:.3f} | "
                     f"{r['class_prompts_with_attributes']['all_three']:.3f} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
