"""Captioned digits: real MNIST digits, coloured and placed left or right on crops of real photos.

    "a red seven on the left"     "a blue two on the right"

Each image is a 32 x 32 crop of a BSDS500 photo (a random square of 35-70 % of the photo's short
side, resized, so backgrounds are real but not busy) with one digit painted in a saturated colour
(alpha = the digit's grey level) at 20 px, its centre in the left or right third; or the same at
64 px (or any multiple of 32), for a cascade's final resolution. Three attributes,
so a classifier can check a generated image against its caption: digit (10), colour (4), position (2).

Splits keep their digits (MNIST images) and their photos apart, so a test image shares neither
with a training image. A few (digit, colour, position) combinations can be held out of training
entirely, to test whether a model composes attributes it has only seen apart.

Training captions drop attributes at random ("a seven", "a red seven", "a seven on the left"), so
a model also follows partial prompts, such as DreamBooth's class prompt "a seven".
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import images as image_utils

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = {"red": (235, 35, 35), "green": (35, 205, 60), "blue": (45, 90, 255), "yellow": (250, 225, 30)}
POSITIONS = ("left", "right")
ATTRIBUTES = {"digit": DIGITS, "colour": tuple(COLOURS), "position": POSITIONS}
IDENTIFIER = "sks"  # DreamBooth's rare token: in the vocabulary, never in a training caption
VOCABULARY = ("a", "on", "the", *DIGITS, *COLOURS, *POSITIONS, IDENTIFIER)
SEQUENCE_LENGTH = 8  # "a sks red seven on the left" is 7 words
IMAGE_SIZE = 32
DIGIT_SIZE = 20


def caption(digit, colour=None, position=None, identifier=False):
    """The caption of attribute indices; None leaves an attribute out."""
    words = ["a"] + ([IDENTIFIER] if identifier else [])
    words += [tuple(COLOURS)[colour]] if colour is not None else []
    words += [DIGITS[digit]] + (["on", "the", POSITIONS[position]] if position is not None else [])
    return " ".join(words)


def every_caption():
    """-> (every caption a model is trained or prompted with, labels {"digit", "colour", "position"}):
    each digit with or without a colour and a side, and the empty caption; an attribute left out
    (or the empty caption's digit) is labelled with one past its last value, "not said"."""
    texts, labels = [""], [[len(DIGITS), len(COLOURS), len(POSITIONS)]]
    for digit in range(len(DIGITS)):
        for colour in [*range(len(COLOURS)), None]:
            for position in [*range(len(POSITIONS)), None]:
                texts.append(caption(digit, colour, position))
                labels.append([digit, len(COLOURS) if colour is None else colour,
                               len(POSITIONS) if position is None else position])
    labels = np.asarray(labels)
    return texts, {name: labels[:, i] for i, name in enumerate(ATTRIBUTES)}


def tokenizer():
    """Captions -> int token ids [B, SEQUENCE_LENGTH] (0 pads, 1 is an unknown word)."""
    return keras.layers.TextVectorization(standardize="lower_and_strip_punctuation", split="whitespace",
                                             output_mode="int", output_sequence_length=SEQUENCE_LENGTH,
                                             vocabulary=list(VOCABULARY))


def render(digits, attributes, photos, photo_ids, seed, size=IMAGE_SIZE):
    """-> (uint8 images [n, size, size, 3], float32 digit masks [n, size, size]): digit i (uint8
    [28, 28]) in colour attributes[i, 1] at position attributes[i, 2], on a random crop of
    photos[photo_ids[i]]; its mask is the alpha it was painted with (0 background, 1 the digit's
    full colour). `size` is a multiple of 32: the same layout (the digit 20/32 of the image) at a
    higher resolution, with the same random draws as at 32."""
    if size % IMAGE_SIZE:
        raise UserError(f"image size {size}: it must be a multiple of {IMAGE_SIZE}.")
    scale = size // IMAGE_SIZE
    digit_size = DIGIT_SIZE * scale
    rng = np.random.default_rng(seed)
    out = np.empty((len(digits), size, size, 3), np.uint8)
    masks = np.empty((len(digits), size, size), np.float32)
    glyphs = tf.image.resize(np.asarray(digits, "float32")[..., None], (digit_size, digit_size), antialias=True).numpy()
    colours = np.asarray(list(COLOURS.values()), "float32")
    for i, (glyph, (_, colour, position), photo_id) in enumerate(zip(glyphs, attributes, photo_ids)):
        photo = photos[photo_id]
        side = int(min(photo.shape[:2]) * rng.uniform(0.35, 0.7))
        top, left = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        background = image_utils.resize_image(photo[top : top + side, left : left + side], size).numpy()
        centre_x = (IMAGE_SIZE // 3 - 1 if position == 0 else IMAGE_SIZE - IMAGE_SIZE // 3) + rng.integers(-1, 2)
        centre_y = IMAGE_SIZE // 2 + rng.integers(-3, 4)
        x0, y0 = scale * centre_x - digit_size // 2, scale * centre_y - digit_size // 2
        canvas = np.zeros((size + 2 * digit_size, size + 2 * digit_size, 1), "float32")
        canvas[digit_size + y0 : digit_size + y0 + digit_size, digit_size + x0 : digit_size + x0 + digit_size] = glyph
        alpha = np.clip(canvas[digit_size:-digit_size, digit_size:-digit_size] / 255.0, 0, 1)
        out[i] = np.round(background * (1 - alpha) + colours[colour] * alpha).astype(np.uint8)
        masks[i] = alpha[..., 0]
    return out, masks


def estimated_masks(images, colours):
    """Where a digit in colour index colours[i] seems painted in images[i] (uint8), for images this
    module did not draw, such as a model's samples: 1 at the colour, falling linearly to 0 at 128
    RGB levels from it (the photos behind rarely come that close to the saturated colours)."""
    painted = np.asarray(list(COLOURS.values()), "float32")[np.asarray(colours)][:, None, None]
    return np.clip(1 - np.linalg.norm(np.asarray(images, "float32") - painted, axis=-1) / 128, 0, 1)


@dataclasses.dataclass
class CaptionedSplit:
    images: np.ndarray  # uint8 [n, size, size, 3]
    attributes: np.ndarray  # int [n, 3]: digit, colour, position
    digit_ids: np.ndarray  # the MNIST image behind each image
    photo_ids: np.ndarray  # the background photo behind each image
    masks: np.ndarray  # float32 [n, size, size]: where the digit was painted (its alpha)

    def downsampled(self, size):
        """The same split at `size` px (area averaging): what a cascade's base stage trains on."""
        masks = tf.image.resize(self.masks[..., None], (size, size), method="area").numpy()[..., 0]
        return dataclasses.replace(self, images=shrunk(self.images, size).numpy().astype(np.uint8), masks=masks)


def shrunk(images, size):
    """uint8 images [n, S, S, 3] at `size` px by area averaging, rounded to whole levels (float32, tf ops)."""
    return tf.round(tf.image.resize(tf.cast(images, tf.float32), (size, size), method="area"))


def all_combinations():
    return np.stack(np.meshgrid(np.arange(10), np.arange(len(COLOURS)), np.arange(len(POSITIONS)),
                                indexing="ij"), -1).reshape(-1, 3)


def held_out_combinations(count, seed):
    """`count` (digit, colour, position) triples, each digit at most once, none of the others lost
    from training (every colour and position still appears with every digit)."""
    if not 0 <= count <= len(DIGITS):
        raise UserError(f"data.held_out_combinations = {count}: it must lie in 0..{len(DIGITS)}.")
    rng = np.random.default_rng(seed)
    digits = rng.permutation(len(DIGITS))[:count]
    return np.stack([digits, rng.integers(0, len(COLOURS), count), rng.integers(0, len(POSITIONS), count)], -1)


def build_splits(digits, labels, photos, renders_per_digit, fractions, held_out, seed, size=IMAGE_SIZE):
    """-> {"train", "validation", "test"}: CaptionedSplit at `size` px, digits and photos disjoint across splits.

    Attributes are drawn at random per render; the `held_out` combinations never appear in train.
    """
    rng = np.random.default_rng(seed)
    digit_order, photo_order = rng.permutation(len(digits)), rng.permutation(len(photos))
    splits = {}
    start_digit = start_photo = 0
    for index, (name, fraction) in enumerate(fractions.items()):
        last = index == len(fractions) - 1
        digit_count = len(digits) - start_digit if last else int(round(fraction * len(digits)))
        photo_count = len(photos) - start_photo if last else max(1, int(round(fraction * len(photos))))
        chosen = np.repeat(digit_order[start_digit : start_digit + digit_count], renders_per_digit[name])
        photo_ids = rng.choice(photo_order[start_photo : start_photo + photo_count], len(chosen))
        start_digit, start_photo = start_digit + digit_count, start_photo + photo_count
        attributes = np.stack([labels[chosen], rng.integers(0, len(COLOURS), len(chosen)),
                               rng.integers(0, len(POSITIONS), len(chosen))], -1)
        if name == "train" and len(held_out):
            banned = (attributes[:, None, :] == np.asarray(held_out)[None]).all(-1).any(-1)
            attributes[banned, 1] = (attributes[banned, 1] + 1) % len(COLOURS)  # moved to a kept combination
        if len(chosen) == 0 or photo_count < 1:
            raise UserError(f"The {name} split would be empty: {len(digits)} digits and {len(photos)} photos are too few.")
        images, masks = render(digits[chosen], attributes, photos, photo_ids, seed + index, size)
        splits[name] = CaptionedSplit(images, attributes, chosen, photo_ids, masks)
    return splits
