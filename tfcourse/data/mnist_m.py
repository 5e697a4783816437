"""MNIST-M, built by the recipe of Ganin & Lempitsky (2015), and synthetic stand-ins for smoke runs.

Each digit is blended with a random patch of a natural photo: out = |patch - digit| per channel,
the digit's 0..255 grey level broadcast to three channels. Strokes take the photo's inverted
colours; the background keeps the photo's. The photos are the BSDS500 set (the paper's choice):

    backgrounds, skipped = mnist_m.load_backgrounds("BSR/BSDS500/data/images/train")
    images, photo_ids = mnist_m.blend(digits, backgrounds, photo_choices, seed=0)

Everything is seeded: the same digits, photos and seed give the same images, byte for byte.
`split_photos` gives train and test photo sets with no photo in both, so a test image never
shares its background photo with a training image.
"""

import glob
import os

import numpy as np
import tensorflow as tf

from tfcourse import UserError

PHOTO_PATTERNS = ("*.jpg", "*.jpeg", "*.png", "*.JPG", "*.JPEG", "*.PNG")
BSDS500_HINT = ("BSDS500 is at https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html "
                "(BSR_bsds500.tgz; its images are under BSR/BSDS500/data/images/).")


def load_backgrounds(folder, min_size=28):
    """-> (list of uint8 RGB photos [h, w, 3], skipped [{"file", "reason"}]) from a folder of images."""
    if not os.path.isdir(folder):
        raise UserError(f"Background photo folder {folder!r} does not exist. {BSDS500_HINT}")
    files = sorted({path for pattern in PHOTO_PATTERNS for path in glob.glob(os.path.join(folder, pattern))})
    photos, skipped = [], []
    for path in files:
        try:
            photo = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False).numpy()
        except (tf.errors.OpError, ValueError) as error:
            skipped.append({"file": path, "reason": str(error).splitlines()[0]})
            continue
        if min(photo.shape[:2]) < min_size:
            skipped.append({"file": path, "reason": f"smaller than {min_size} px"})
            continue
        photos.append(photo)
    if len(photos) < 2:
        raise UserError(f"{folder!r} holds {len(photos)} usable photo(s) ({len(skipped)} skipped); MNIST-M needs "
                        f"at least 2 (one for training, one for testing). {BSDS500_HINT}")
    return photos, skipped


def load_photos(backgrounds, seed):
    """-> (photos, skipped) of a folder, or 24 synthetic textures for backgrounds="synthetic"."""
    if backgrounds == "synthetic":
        return synthetic_photos(24, seed=seed), []
    return load_backgrounds(backgrounds)


def split_photos(num_photos, test_fraction, seed):
    """-> (train photo ids, test photo ids): disjoint, each non-empty, chosen with `seed`."""
    if num_photos < 2:
        raise UserError(f"{num_photos} background photo(s): need at least 2 to keep train and test photos apart.")
    order = np.random.default_rng(seed).permutation(num_photos)
    num_test = min(max(1, round(num_photos * test_fraction)), num_photos - 1)
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def blend(digits, photos, photo_choices, seed):
    """-> (uint8 images [n, h, w, 3], photo id per image): |random patch of a photo - digit|.

    `digits`: uint8 [n, h, w] grey digits; `photos`: list of uint8 [H, W, 3]; `photo_choices`: the
    photo ids to draw from (e.g. only the training photos).
    """
    digits = np.asarray(digits)
    if digits.ndim != 3 or digits.dtype != np.uint8:
        raise ValueError(f"digits must be uint8 [n, h, w], got {digits.dtype} {digits.shape}.")
    rng = np.random.default_rng(seed)
    height, width = digits.shape[1:]
    photo_ids = rng.choice(np.asarray(photo_choices), size=len(digits))
    images = np.empty((*digits.shape, 3), np.uint8)
    for i, (digit, photo_id) in enumerate(zip(digits, photo_ids)):
        photo = photos[photo_id]
        top = rng.integers(0, photo.shape[0] - height + 1)
        left = rng.integers(0, photo.shape[1] - width + 1)
        patch = photo[top : top + height, left : left + width].astype(np.int16)
        images[i] = np.abs(patch - digit[..., None].astype(np.int16)).astype(np.uint8)
    return images, photo_ids


def grey_to_rgb(digits):
    """uint8 [n, h, w] -> uint8 [n, h, w, 3] (the source domain as the model's 3-channel input)."""
    return np.repeat(np.asarray(digits)[..., None], 3, axis=-1)


# Stand-ins for smoke runs and tests (no downloads): glyph "digits" and textured "photos".

GLYPHS = ("bar", "dash", "cross", "ring", "box", "slash")


def synthetic_digits(num_images, num_classes=4, size=28, seed=0):
    """-> (uint8 [n, size, size] white-on-black glyphs, int64 labels, class names): jittered shapes."""
    if not 2 <= num_classes <= len(GLYPHS):
        raise UserError(f"synthetic digits have 2 to {len(GLYPHS)} classes, not {num_classes}.")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_images).astype(np.int64)
    rows, cols = np.mgrid[0:size, 0:size]
    images = np.zeros((num_images, size, size), np.uint8)
    for i, label in enumerate(labels):
        cy, cx = size / 2 + rng.uniform(-3, 3, 2)
        radius = size * rng.uniform(0.22, 0.34)
        thick = rng.uniform(1.2, 2.5)
        dy, dx = rows - cy, cols - cx
        glyph = GLYPHS[label]
        if glyph == "bar":
            mask = (np.abs(dx) < thick) & (np.abs(dy) < radius)
        elif glyph == "dash":
            mask = (np.abs(dy) < thick) & (np.abs(dx) < radius)
        elif glyph == "cross":
            mask = ((np.abs(dx) < thick) | (np.abs(dy) < thick)) & (np.maximum(np.abs(dx), np.abs(dy)) < radius)
        elif glyph == "ring":
            mask = np.abs(np.hypot(dx, dy) - radius) < thick
        elif glyph == "box":
            mask = np.abs(np.maximum(np.abs(dx), np.abs(dy)) - radius) < thick
        else:  # slash
            mask = (np.abs(dx + dy) < 1.4 * thick) & (np.maximum(np.abs(dx), np.abs(dy)) < radius)
        images[i][mask] = rng.integers(200, 256)
    return images, labels, list(GLYPHS[:num_classes])


def synthetic_photos(num_photos, size=64, seed=0):
    """-> list of uint8 [size, size, 3] textures: smooth colour noise plus stripes, like busy photos."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    photos = []
    for _ in range(num_photos):
        coarse = rng.uniform(0, 255, (8, 8, 3))
        smooth = np.kron(coarse, np.ones((size // 8, size // 8, 1)))
        angle, frequency = rng.uniform(0, np.pi), rng.uniform(3, 12)
        stripes = 60 * np.sin(2 * np.pi * frequency * (rows * np.cos(angle) + cols * np.sin(angle)))
        photos.append(np.clip(smooth + stripes[..., None] * rng.uniform(-1, 1, 3), 0, 255).astype(np.uint8))
    return photos
