"""
Title: Text-to-image and text-guided editing with a diffusion model
Description: Train a small text-to-image diffusion model of Stable Diffusion's design (a text
encoder, a UNet of KerasCV's ResBlocks and SpatialTransformers, DDIM sampling with classifier-free
guidance) on captioned digits built from real MNIST digits and real photos, and check what it draws
with a classifier: does the image show the digit, colour and position its caption asks for? Then
edit with the same sampler: img2img at a sweep of strengths, and inpainting that changes the digit
while every pixel outside the mask stays the input's.

    tfcourse run text-to-image    # TFDS mnist + BSDS500 photos from a local folder
    tfcourse run text-to-image --smoke    # synthetic glyphs and textures, a tiny model: minutes on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run text-to-image --config configs/text-to-image-assets.yaml

The data ("a red seven on the left"): see tfcourse.data.captioned_digits. The model is trained with
`fit` on a tf.data pipeline that noises each image afresh: inputs {noisy image, timestep embedding,
caption tokens}, target the velocity v (`diffusion.small_unet` says why not the noise), and the
digit's pixels weighted up in the loss (`noising_pipeline` says why). So the
course's callbacks, resumable backups and strategies apply as to any other Keras model.

Stable Diffusion itself (KerasCV, 860M-parameter UNet) runs the same sampler and edits: see
tfcourse.models.stable_diffusion (its docstring shows sampling and DreamBooth on it) and the README.
"""

import dataclasses
import os
import re
import typing

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, runs, train, viz
from tfcourse.config import load as load_config
from tfcourse.data import captioned_digits as captions
from tfcourse.data import mnist, mnist_m
from tfcourse.models import diffusion

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    digits: str = "tfds:mnist"  # "tfds:NAME", a folder of MNIST IDX files, or "synthetic"
    digits_split: str = "train"
    tfds_data_dir: str = ""
    backgrounds: str = "BSR/BSDS500/data/images/train"  # a folder of photos, or "synthetic"
    max_digits: int = 10000  # MNIST images used (0: all); each is in one split only
    renders_per_digit: int = 2  # training images per training digit (fresh colour, side and crop each)
    held_out_combinations: int = 8  # (digit, colour, side) triples never shown in training
    attribute_dropout: float = 0.25  # per training caption, the chance of leaving out its colour, and its side
    caption_dropout: float = 0.1  # empty captions: what classifier-free guidance needs
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    batch_size: int = 32
    seed: int = 42

    def validate(self):
        for name in ("attribute_dropout", "caption_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"data.{name} = {getattr(self, name)} must be in [0, 1).")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise UserError(f"data.{name} = {getattr(self, name)} must be between 0 and 0.5.")
        if min(self.renders_per_digit, self.batch_size) < 1 or self.max_digits < 0:
            raise UserError("data.renders_per_digit and data.batch_size must be >= 1, data.max_digits >= 0.")


@dataclasses.dataclass
class ModelConfig:
    size: typing.Literal[tuple(diffusion.SMALL_SIZES)] = "small"


@dataclasses.dataclass
class TrainConfig:
    strategy: typing.Literal["auto", "default", "mirrored", "tpu", "multi_worker"] = "auto"
    epochs: int = 24
    steps_per_epoch: int = 250
    learning_rate: float = 5e-4
    digit_loss_weight: float = 9.0  # a pixel's loss weighs 1 + this x the digit's alpha there
    ema_momentum: float = 0.999  # sampling uses the exponential moving average of the weights
    classifier_epochs: int = 12
    text_encoder_epochs: int = 40  # of every caption (151): the text encoder's pre-training
    early_stopping_patience: int = 6

    def validate(self):
        if min(self.epochs, self.steps_per_epoch, self.classifier_epochs, self.text_encoder_epochs) < 1:
            raise UserError("train.epochs, steps_per_epoch, classifier_epochs and text_encoder_epochs must be >= 1.")
        if self.learning_rate <= 0:
            raise UserError(f"train.learning_rate = {self.learning_rate}: it must be > 0.")
        if not 0 <= self.ema_momentum < 1:
            raise UserError(f"train.ema_momentum = {self.ema_momentum}: it must be in [0, 1).")
        if self.digit_loss_weight < 0:
            raise UserError(f"train.digit_loss_weight = {self.digit_loss_weight}: it must be >= 0 (0: every pixel alike).")


@dataclasses.dataclass
class SampleConfig:
    num_steps: int = 50  # DDIM steps
    guidance: float = 12.0  # classifier-free guidance scale (at epoch 19 of the assets run the digit was right 0.41 of the time at 7.5, Stable Diffusion's default, 0.53 at 12, 0.52 at 20)
    alignment_captions: int = 200  # test captions drawn, one image each
    held_out_samples: int = 10  # images per held-out combination
    edits: int = 40  # test images edited by inpainting and by img2img
    strengths: tuple = (0.0, 0.25, 0.5, 0.75, 1.0)

    def validate(self):
        if min(self.num_steps, self.alignment_captions, self.edits) < 1 or self.guidance < 0:
            raise UserError("sample.num_steps, alignment_captions and edits must be >= 1, guidance >= 0.")
        if any(not 0 <= s <= 1 for s in self.strengths):
            raise UserError(f"sample.strengths = {list(self.strengths)}: each must lie in [0, 1].")


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)


SMOKE = {
    "data": {"digits": "synthetic", "backgrounds": "synthetic", "max_digits": 300, "held_out_combinations": 2},
    "model": {"size": "tiny"},
    "train": {"epochs": 2, "steps_per_epoch": 10, "classifier_epochs": 2, "text_encoder_epochs": 3, "ema_momentum": 0.5},
    "sample": {"num_steps": 8, "alignment_captions": 16, "held_out_samples": 2, "edits": 8,
               "strengths": (0.0, 0.5, 1.0)},
}

# ## The data


def load_sources(data):
    """-> (uint8 digits [n, 28, 28], labels, photos, skipped photo files)."""
    if data.digits == "synthetic":  # glyphs named after digits: "zero" is a bar, "one" a dash, ...
        digits, labels, _ = mnist_m.synthetic_digits(data.max_digits or 1000, num_classes=6, seed=data.seed)
    else:
        digits, labels = mnist.load_digits(data.digits, data.digits_split, data.tfds_data_dir or None)
    if data.max_digits:
        order = np.random.default_rng(data.seed).permutation(len(digits))[: data.max_digits]
        digits, labels = digits[order], labels[order]
    photos, skipped = mnist_m.load_photos(data.backgrounds, data.seed)
    return digits, labels, photos, skipped


def load_splits(data, sources, size=captions.IMAGE_SIZE):
    """`load_sources(data)` -> ({split: CaptionedSplit at `size` px}, held-out combinations, summary)."""
    digits, labels, photos, skipped = sources
    held_out = captions.held_out_combinations(data.held_out_combinations, data.seed)
    fractions = {"train": 1 - data.validation_fraction - data.test_fraction, "validation": data.validation_fraction,
                 "test": data.test_fraction}
    splits = captions.build_splits(digits, labels, photos, {"train": data.renders_per_digit, "validation": 1, "test": 1},
                                   fractions, held_out, data.seed, size)
    summary = {"digits": data.digits, "backgrounds": data.backgrounds,
               "synthetic": "synthetic" in (data.digits, data.backgrounds), "num_digits": len(digits),
               "num_photos": len(photos), "num_skipped": len(skipped), "skipped": skipped,
               "split_sizes": {name: len(split.images) for name, split in splits.items()},
               "held_out_combinations": [captions.caption(*c) for c in held_out]}
    return splits, held_out, summary


def caption_strings(attributes, attribute_dropout, caption_dropout, seed):
    """Training captions of [n, 3] attribute tensors, with colour and side each dropped at random and
    some captions emptied (tf ops, so every epoch draws afresh)."""
    words = {name: tf.constant(list(values)) for name, values in captions.ATTRIBUTES.items()}
    n = tf.shape(attributes)[0]
    keep_colour = tf.random.stateless_uniform([n], seed=seed) >= attribute_dropout
    keep_side = tf.random.stateless_uniform([n], seed=seed + [0, 1]) >= attribute_dropout
    empty = tf.random.stateless_uniform([n], seed=seed + [0, 2]) < caption_dropout
    colour = tf.where(keep_colour, tf.gather(words["colour"], attributes[:, 1]) + " ", "")
    side = tf.where(keep_side, " on the " + tf.gather(words["position"], attributes[:, 2]), "")
    text = "a " + colour + tf.gather(words["digit"], attributes[:, 0]) + side
    return tf.where(empty, "", text)


def noising_pipeline(split, data, tokenize, alphas_cumprod, time_width, batch_size, training, digit_loss_weight,
                     super_resolution=None):
    """Batches of ({"noisy_images", "timestep_embedding", "tokens"}, v, pixel weights): a fresh step
    and fresh noise per image, every epoch, for training; fixed ones (by position) for validation, so
    its loss compares across epochs.

    `super_resolution` = (low-res size, highest augmentation level): x0 is the residual over the
    image shrunk to that size (area averaging) and upsampled, and the stage also sees the shrunk
    image `diffusion.noise_augmented` to a random level.

    The digit's pixels weigh 1 + `digit_loss_weight` x its alpha in the loss. Its strokes are about 9 %
    of the pixels; with every pixel alike the photo behind it dominates the loss, and a 24-epoch model
    drew the colour and side asked for but no digit shapes (digit right 0.13 of the time)."""
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.attributes.astype("int32"), split.masks))
    if training:
        ds = ds.shuffle(len(split.images), seed=data.seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=training).enumerate()

    def noised(index, batch):
        images, attributes, masks = batch
        seed = tf.stack([tf.cast(index, tf.int32), 0 if not training else tf.random.uniform([], 0, 2**30, tf.int32)])
        if training:
            text = caption_strings(attributes, data.attribute_dropout, data.caption_dropout, seed + [0, 11])
        else:
            text = caption_strings(attributes, 0.0, 0.0, seed)
        low_res = captions.shrunk(images, super_resolution[0]) if super_resolution else None
        inputs, v = diffusion.training_batch(images, tokenize(text), alphas_cumprod, time_width, seed, low_res)
        if super_resolution:
            highest_level = super_resolution[1]
            levels = tf.random.stateless_uniform([tf.shape(images)[0]], seed + [0, 5], maxval=highest_level + 1, dtype=tf.int32)
            inputs.update(diffusion.noise_augmented(low_res, tf.shape(images)[1], levels, alphas_cumprod, time_width,
                                                    seed + [0, 6]))
        return inputs, v, 1 + digit_loss_weight * masks

    return ds.map(noised, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def compile_attribute_heads(model, strategy):
    """Adam, cross-entropy and accuracy per head, for a model with a softmax head per caption attribute
    (the judge, and the text encoder's pre-training)."""
    model.compile(optimizer=keras.optimizers.Adam(train.scaled_learning_rate(1e-3, strategy)),
                  loss="sparse_categorical_crossentropy", metrics={name: "accuracy" for name in captions.ATTRIBUTES})


# ## The text encoder, pre-trained and frozen
# Stable Diffusion's text encoder (CLIP's) comes pre-trained and stays frozen. Trained jointly with
# the UNet from scratch, ours carried the colour about ten times more strongly than the digit (the
# spread of its mean encoding over the ten digits 0.52, over the four colours 4.8, after 3 epochs),
# and the UNet never learned which digit to draw. So it first learns to say what each caption asks
# for, then stays frozen.


def pretrain_text_encoder(text_encoder, tokenize, epochs, stage_dir, strategy):
    """Trains `text_encoder` to tell, from its mean encoding, each caption's digit, colour and side (or
    that the caption leaves them out), on every caption there is; then freezes it. -> history."""
    texts, labels = captions.every_caption()
    tokens = keras.Input(text_encoder.inputs[0].shape[1:], dtype="int32", name="tokens")
    pooled = keras.layers.GlobalAveragePooling1D()(text_encoder(tokens))
    heads = {name: keras.layers.Dense(int(labels[name].max()) + 1, activation="softmax", name=name)(pooled)
             for name in captions.ATTRIBUTES}
    model = keras.Model(tokens, heads, name="caption_reader")
    compile_attribute_heads(model, strategy)
    every = tf.data.Dataset.from_tensor_slices((tokenize(texts), labels))  # the whole caption language: no held-out text
    history = train.fit_stage(model, every.shuffle(len(texts), seed=0).batch(32), every.batch(256), epochs, stage_dir,
                              patience=epochs, strategy=strategy)
    text_encoder.trainable = False
    return history


# ## The judge: a classifier of digit, colour and side
# Trained on real images of the training split; its accuracy on real test images is the ceiling
# for what it can confirm of generated ones.


def build_attribute_classifier(num_digits, image_size=captions.IMAGE_SIZE):
    """A small CNN with three softmax heads. Flatten, not global pooling, keeps where the digit is;
    shifts of up to 2 px (at 32 px) in training leave the side unchanged. Its 128 "features" are what
    the cascaded-diffusion lesson's FID compares."""
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(keras.ops.cast(images, "float32"))
    x = keras.layers.RandomTranslation(2 / captions.IMAGE_SIZE, 2 / captions.IMAGE_SIZE, fill_mode="nearest")(x)
    for filters in (32, 64, 128):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dropout(0.3)(keras.layers.Flatten()(x))
    features = keras.layers.Dense(128, activation="relu", name="features")(x)
    outputs = {name: keras.layers.Dense(size, activation="softmax", name=name)(features)
               for name, size in (("digit", num_digits), ("colour", len(captions.COLOURS)),
                                  ("position", len(captions.POSITIONS)))}
    return keras.Model(images, outputs, name="attribute_classifier")


def classifier_pipeline(split, batch_size, training, seed):
    labels = {name: split.attributes[:, i] for i, name in enumerate(captions.ATTRIBUTES)}
    ds = tf.data.Dataset.from_tensor_slices((split.images, labels))
    if training:
        ds = ds.shuffle(len(split.images), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_judge(splits, num_digits, t, seed, stage_dir, strategy):
    """-> (the judge trained on the real training images at their size, history)."""
    with train.model_scope(strategy):
        classifier = build_attribute_classifier(num_digits, splits["train"].images.shape[1])
        compile_attribute_heads(classifier, strategy)
        history = train.fit_stage(classifier, classifier_pipeline(splits["train"], 128, True, seed),
                                  classifier_pipeline(splits["validation"], 256, False, seed), t.classifier_epochs,
                                  stage_dir, t.early_stopping_patience, strategy)
    return classifier, history


def judge(classifier, images, attributes):
    """Per attribute, and all three at once: the share of images the classifier sees as asked."""
    predicted = classifier.predict(images, batch_size=256, verbose=0)
    right = np.stack([predicted[name].argmax(-1) == attributes[:, i] for i, name in enumerate(captions.ATTRIBUTES)], -1)
    return {**{name: float(right[:, i].mean()) for i, name in enumerate(captions.ATTRIBUTES)},
            "all_three": float(right.all(-1).mean()), "count": len(images)}


def ema_momentum(momentum, steps):
    """`momentum`, or less for a short stage: Keras' EMA starts from the first step's (near random)
    weights with no bias correction, so they keep momentum ** steps of the average (0.999 over 1,250
    steps: 29 %, and a super-resolution stage sampled noise). At most 1 % here."""
    return min(momentum, 0.01 ** (1 / steps))


def train_denoiser(denoiser, pipelines, t, epochs, stage_dir, strategy):
    """AdamW at `t.learning_rate` for `epochs` x `t.steps_per_epoch` steps (in the strategy's scope),
    sampled with the EMA of the weights. -> history."""
    # The EMA lives in the optimizer's state (so in every backup); fit_stage puts it into the model at the end.
    momentum = ema_momentum(t.ema_momentum, epochs * t.steps_per_epoch)
    denoiser.compile(optimizer=keras.optimizers.AdamW(train.scaled_learning_rate(t.learning_rate, strategy),
                                                      use_ema=momentum > 0, ema_momentum=momentum),
                     loss="mse")
    return train.fit_stage(denoiser, pipelines["train"].take(t.steps_per_epoch), pipelines["validation"], epochs,
                           stage_dir, t.early_stopping_patience, strategy)


# ## The lesson

MODEL_FILE, JUDGE_FILE = "text_to_image.keras", "judge.keras"  # the run's trained denoiser and classifier


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    strategy = train.get_strategy(config.train.strategy)
    data, t, s = config.data, config.train, config.sample

    with timings("data"):
        splits, held_out, data_summary = load_splits(data, load_sources(data))
        tokenize = captions.tokenizer()
        batch_size = train.global_batch_size(data.batch_size, strategy)
    num_digits = int(max(split.attributes[:, 0].max() for split in splits.values())) + 1
    print(f"Data: split sizes {data_summary['split_sizes']}, held out of training: "
          f"{data_summary['held_out_combinations']}, {data_summary['num_skipped']} photo(s) skipped.")

    # 1. The judge.
    with timings("train_classifier"):
        classifier, classifier_history = train_judge(splits, num_digits, t, data.seed,
                                                     os.path.join(checkpoints, "classifier"), strategy)
        histories = {"classifier": classifier_history}
    train.write_atomically(os.path.join(run_dir, JUDGE_FILE), classifier.save)
    real = judge(classifier, splits["test"].images, splits["test"].attributes)
    print(f"Classifier on real test images: {real}")

    # 2. The text-to-image model.
    alphas = diffusion.cosine_alphas_cumprod()
    with timings("train_diffusion"), train.model_scope(strategy):
        denoiser, unet, text_encoder = diffusion.build_small(config.model.size, len(tokenize.get_vocabulary()),
                                                             captions.SEQUENCE_LENGTH)
        histories["text_encoder"] = pretrain_text_encoder(text_encoder, tokenize, t.text_encoder_epochs,
                                                          os.path.join(checkpoints, "text_encoder"), strategy)
        time_width = unet.inputs[1].shape[-1]
        pipelines = {name: noising_pipeline(splits[name], data, tokenize, alphas, time_width, batch_size,
                                            name == "train", t.digit_loss_weight) for name in ("train", "validation")}
        histories["diffusion"] = train_denoiser(denoiser, pipelines, t, t.epochs, os.path.join(checkpoints, "diffusion"),
                                                strategy)
    train.write_atomically(os.path.join(run_dir, MODEL_FILE), denoiser.save)  # what DreamBooth fine-tunes
    sampler = diffusion.pixel_sampler(unet, text_encoder, tokenize, alphas)

    def draw(prompts, seed, **settings):
        return generate(sampler, prompts, seed, s, **settings)

    # 3. Does it draw what the caption says? Test captions (new digits, photos, seeds) at a sweep of
    # guidance scales, and held-out combinations; and does the caption tell it the digit at all?
    with timings("alignment"):
        rng = np.random.default_rng(data.seed)
        asked = splits["test"].attributes[rng.permutation(len(splits["test"].attributes))[: s.alignment_captions]]
        drawn = {guidance: draw([captions.caption(*a) for a in asked], seed=1, guidance=guidance)
                 for guidance in sorted({*GUIDANCE_SWEEP, s.guidance})}
        by_guidance = {guidance: judge(classifier, images, asked) for guidance, images in drawn.items()}
        generated = drawn[s.guidance]
        alignment = {"test_captions": by_guidance[s.guidance]}
        if len(held_out):
            unseen = np.repeat(held_out, s.held_out_samples, axis=0)
            alignment["held_out_combinations"] = judge(classifier, draw([captions.caption(*a) for a in unseen], seed=2),
                                                       unseen)
        probe = caption_probe(sampler, classifier, splits["test"], s.alignment_captions)
    print(f"Text alignment: {alignment}\nDigit right in one-step estimates (with / without the caption): {probe}")

    # 4. Editing: inpaint a new digit where the old one was; img2img towards a new digit and colour.
    with timings("editing"):
        editing = edit_images(splits["test"], classifier, draw, s, num_digits, run_dir)

    report = {
        "lesson": "text-to-image",
        "config": dataclasses.asdict(config),
        "data": data_summary,
        "model": {"size": config.model.size, "unet_parameters": unet.count_params(),
                  "text_encoder_parameters": text_encoder.count_params(), "space": "pixels (2 x 2 patches)",
                  "schedule": "cosine, 1000 steps", "sampler": f"DDIM, {s.num_steps} steps, guidance {s.guidance}",
                  "loss": f"v-prediction MSE, the digit's pixels weighted 1 + {t.digit_loss_weight} x alpha",
                  "weights": f"EMA, momentum {ema_momentum(t.ema_momentum, t.epochs * t.steps_per_epoch):.5g}"
                  if t.ema_momentum else "the trained weights"},
        "note": honesty_note(data_summary, config),
        "distribution": train.describe_strategy(strategy, data.batch_size),
        "classifier_on_real_test_images": real,
        "text_encoder_accuracy": {name: histories["text_encoder"][f"{name}_accuracy"][-1] for name in captions.ATTRIBUTES},
        "alignment": alignment,
        "alignment_by_guidance": [{"guidance": g, **r} for g, r in by_guidance.items()],
        "caption_probe": probe,
        "editing": editing,
        "timings_seconds": dict(timings),
    }
    _plots(run_dir, histories, generated, asked, draw, report)
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def generate(sampler, prompts, seed, s, images=None, mask=None, strength=1.0, guidance=None):
    """Images for `prompts` (with `images`/`mask`: edits of those), by `s`'s sampler settings (its
    guidance unless `guidance` is given)."""
    return sampler.generate(prompts, seed=seed, num_steps=s.num_steps, guidance=s.guidance if guidance is None else guidance,
                            images=images, mask=mask, strength=strength)


def load_run_models(run_dir):
    """-> (denoiser, judge) of a finished text-to-image run (`.keras`, Keras safe mode)."""
    paths = [os.path.join(run_dir, name) for name in (MODEL_FILE, JUDGE_FILE)]
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"{run_dir!r} has no {os.path.basename(path)}: give the directory of a finished "
                            "`tfcourse run text-to-image`.")
    return keras.models.load_model(paths[0]), keras.models.load_model(paths[1])


def draw_files(run_dir, prompts, out_dir=None, seed=0):
    """Captions -> PNG files drawn by a text-to-image run's model, at the run's sampler settings, each
    with the caption of what the run's judge sees in it. Written to `out_dir` (default RUN_DIR/predictions)."""
    words = [re.findall(r"[a-z]+", prompt.lower()) for prompt in prompts]
    for prompt, prompt_words in zip(prompts, words):
        unknown = [w for w in prompt_words if w not in captions.VOCABULARY]
        if unknown or not prompt.strip():
            raise UserError(f"caption {prompt!r}: the model knows only the words {' '.join(captions.VOCABULARY)}"
                            + (f"; not {', '.join(unknown)}." if unknown else "."))
    denoiser, classifier = load_run_models(run_dir)
    s = load_config(Config, os.path.join(run_dir, "config.yaml")).sample  # the run's own sampler settings
    sampler = diffusion.pixel_sampler(denoiser.get_layer("unet"), denoiser.get_layer("text_encoder"), captions.tokenizer(),
                                      diffusion.cosine_alphas_cumprod())
    images = generate(sampler, list(prompts), seed, s)
    seen = classifier.predict(images, verbose=0)
    out_dir = out_dir or os.path.join(run_dir, "predictions")
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for i, prompt in enumerate(prompts):
        path = os.path.join(out_dir, f"{'_'.join(words[i])}-{seed}-{i}.png")
        train.write_atomically(path, lambda tmp: keras.utils.save_img(tmp, images[i], scale=False))
        results.append({"caption": prompt, "image_png": path,
                        "judge_sees": captions.caption(*(int(np.argmax(seen[k][i])) for k in captions.ATTRIBUTES))})
    return results


GUIDANCE_SWEEP = (1.0, 3.0, 7.5, 12.0, 20.0)  # and the configured guidance
PROBE_STEPS = (300, 500, 700, 900)


def caption_probe(sampler, classifier, test, count):
    """Does the caption tell the model which digit to draw? Noise the first `count` test images to step
    t and judge the denoiser's one-step estimate of the clean image, once told the caption and once the
    empty caption. Where the noise has hidden the digit, only a model that reads the digit from the
    caption finds it more often with it. -> per t, the share of estimates showing the right digit."""
    images, attributes = test.images[:count], test.attributes[:count]
    told = {"with_caption": [captions.caption(*a) for a in attributes], "with_empty_caption": [""] * len(images)}
    return [{"timestep": t, **{name: judge(classifier, sampler.estimate_clean(images, prompts, t, seed=t), attributes)["digit"]
                               for name, prompts in told.items()}} for t in PROBE_STEPS]


def edit_images(test, classifier, draw, s, num_digits, run_dir):
    """Inpainting and an img2img strength sweep on the first `s.edits` test images."""
    images, attributes = test.images[: s.edits], test.attributes[: s.edits]
    new = attributes.copy()
    new[:, 0] = (attributes[:, 0] + 1 + np.arange(len(new)) % (num_digits - 1)) % num_digits  # another digit
    # The mask: the digit's third of the image, with a margin (the side the caption names).
    mask = np.zeros(images.shape[:3], "float32")
    third = captions.IMAGE_SIZE // 3
    for i, side in enumerate(attributes[:, 2]):
        centre = third - 1 if side == 0 else captions.IMAGE_SIZE - third
        mask[i, 2:-2, max(0, centre - 13) : centre + 13] = 1
    painted = draw([captions.caption(*a) for a in new], seed=3, images=images, mask=mask)
    outside = mask == 0
    inpainting = {**judge(classifier, painted, new),
                  "max_abs_change_outside_mask": float(np.abs(painted.astype(int) - images.astype(int))[outside].max() / 255),
                  "mean_abs_change_inside_mask": float(np.abs(painted.astype(int) - images.astype(int))[~outside].mean() / 255)}
    recoloured = new.copy()
    recoloured[:, 1] = (attributes[:, 1] + 1) % len(captions.COLOURS)
    sweep = []
    for strength in s.strengths:
        out = draw([captions.caption(*a) for a in recoloured], seed=4, images=images, strength=strength)
        sweep.append({"strength": strength, "mean_abs_change": float(np.abs(out.astype(int) - images.astype(int)).mean() / 255),
                      "matches_new_prompt": judge(classifier, out, recoloured)["all_three"],
                      "matches_input_caption": judge(classifier, out, attributes)["all_three"], "images": out})
    rows = {"input": images[:8], "mask": (mask[:8, ..., None] * 255).repeat(3, -1), "inpainted": painted[:8]}
    rows.update({f"img2img {r['strength']}": r["images"][:8] for r in sweep})
    viz.plot_image_rows(rows, [f"{captions.caption(*a)}" for a in new[:8]], os.path.join(run_dir, "editing.png"),
                        "Inpainting: a new digit in the mask; img2img: new digit and colour, by strength")
    _plot_sweep(sweep, os.path.join(run_dir, "img2img_strength.png"))
    return {"inpainting": inpainting, "img2img": [{k: v for k, v in r.items() if k != "images"} for r in sweep]}


def honesty_note(data_summary, config):
    notes = []
    if data_summary["synthetic"]:
        notes.append("The data is synthetic glyphs on generated textures, not digits on photos: the figures show the "
                     "pipeline runs, not what the model can learn.")
    if config.model.size == "tiny":
        notes.append("The model is the tiny configuration, trained for a few steps: its images are not meant to be good.")
    return " ".join(notes)


def _plots(run_dir, histories, generated, asked, draw, report):
    _plot_alignment(report["alignment_by_guidance"], report["caption_probe"], os.path.join(run_dir, "alignment.png"))
    viz.plot_training_curves({"classifier": (1, histories["classifier"]), "diffusion": (1, histories["diffusion"])},
                             os.path.join(run_dir, "training_curves.png"), "text-to-image: losses", metrics=("loss",))
    shown = asked[:8]
    prompts = [captions.caption(*a) for a in shown]
    rows = {f"seed {seed}": draw(prompts, seed=seed) for seed in (10, 11, 12)}
    rows = {"first sample": generated[:8], **rows}
    viz.plot_image_rows(rows, prompts, os.path.join(run_dir, "samples.png"), "Generated from test captions")


def _plot_alignment(by_guidance, probe, path):
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    scales = [r["guidance"] for r in by_guidance]
    for name, label in (("digit", "digit"), ("colour", "colour"), ("position", "side"), ("all_three", "all three")):
        left.plot(scales, [r[name] for r in by_guidance], "o-", label=label)
    left.set_xlabel("classifier-free guidance scale")
    left.set_ylabel("share of generated images as captioned")
    left.set_title("Generated from test captions")
    steps = [r["timestep"] for r in probe]
    right.plot(steps, [r["with_caption"] for r in probe], "o-", label="told the caption")
    right.plot(steps, [r["with_empty_caption"] for r in probe], "s--", label="told the empty caption")
    right.set_xlabel("noise step t (of 1000)")
    right.set_ylabel("one-step estimates showing the right digit")
    right.set_title("Does the caption tell the model the digit?")
    for ax in (left, right):
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    viz.save_figure(figure, path)


def _plot_sweep(sweep, path):
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.5, 4))
    strengths = [r["strength"] for r in sweep]
    ax.plot(strengths, [r["mean_abs_change"] for r in sweep], "o-", label="mean |change| from the input")
    ax.plot(strengths, [r["matches_new_prompt"] for r in sweep], "s-", label="classifier: shows the new prompt")
    ax.plot(strengths, [r["matches_input_caption"] for r in sweep], "^-", label="classifier: shows the input's caption")
    ax.set_xlabel("img2img strength")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("img2img: from the input to the prompt")
    viz.save_figure(figure, path)


def summary_markdown(report):
    a = report["alignment"]
    lines = ["# text-to-image run", "",
             f"Data: {report['data']['split_sizes']} captioned images; held out of training: "
             f"{', '.join(report['data']['held_out_combinations']) or 'none'}.", ""]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| images | count | digit | colour | side | all three |", "|---|---|---|---|---|---|"]
    rows = {"real test images": report["classifier_on_real_test_images"], **{f"generated: {k}": v for k, v in a.items()}}
    rows["inpainted (new digit)"] = report["editing"]["inpainting"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['count']} | {r['digit']:.3f} | {r['colour']:.3f} | {r['position']:.3f} | "
                     f"{r['all_three']:.3f} |")
    lines += ["", "Test captions by classifier-free guidance scale:", "",
              "| guidance | digit | colour | side | all three |", "|---|---|---|---|---|"]
    lines += [f"| {r['guidance']} | {r['digit']:.3f} | {r['colour']:.3f} | {r['position']:.3f} | {r['all_three']:.3f} |"
              for r in report["alignment_by_guidance"]]
    lines += ["", "Does the caption tell the model the digit? Test images noised to step t; the share of one-step "
              "estimates of the clean image that show the right digit:", "",
              "| t | told the caption | told the empty caption |", "|---|---|---|"]
    lines += [f"| {r['timestep']} | {r['with_caption']:.3f} | {r['with_empty_caption']:.3f} |" for r in report["caption_probe"]]
    i = report["editing"]["inpainting"]
    lines += ["", f"Inpainting: max |change| outside the mask {i['max_abs_change_outside_mask']:.1e} (of 1), mean inside "
              f"{i['mean_abs_change_inside_mask']:.3f}.", "",
              "| img2img strength | mean abs change | shows the new prompt | shows the input's caption |", "|---|---|---|---|"]
    lines += [f"| {r['strength']} | {r['mean_abs_change']:.3f} | {r['matches_new_prompt']:.3f} | "
              f"{r['matches_input_caption']:.3f} |" for r in report["editing"]["img2img"]]
    m = report["model"]
    lines += ["", f"Model: {m['size']}, UNet {m['unet_parameters']:,} and text encoder {m['text_encoder_parameters']:,} "
              f"parameters, {m['space']}, {m['schedule']}; {m['loss']}; sampled with {m['weights']}: {m['sampler']}.", "",
              "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
