"""Image datasets: a folder of class folders (or a TFDS dataset) to tf.data pipelines.

A folder is scanned once: every file is decoded by TensorFlow's own decoder in a parallel
tf.data pass, and files that fail (corrupt, truncated, not an image) are counted, named in the
report and skipped, or stop the run when `skip_bad_files` is off. The split into
train/validation/test is stratified per class and fixed by a seed.

Every decode first reads the image size from the file's header (JPEG through
`tf.image.extract_jpeg_shape`, PNG's IHDR, GIF's screen, BMP's and WebP's headers) and refuses an
image over MAX_IMAGE_PIXELS before decoding it, so a decompression bomb (a small file declaring
20000x20000 pixels) never allocates its pixels. JPEG XL, which `tf.io.decode_image` also reads, is
refused: its size cannot be read without a bit-level parser. Valid odd formats decode to RGB:
greyscale is repeated, alpha dropped, 16-bit scaled to 8 (value // 256), CMYK JPEG converted.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data.folders import list_class_folder

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation", "test")
MEMORY_CACHE_LIMIT_BYTES = 2 * 1024**3
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS): 268 MB as RGB
_TF_OP_DECORATIONS = re.compile(r"\{\{.*?\}\}\s*|\s*\[Op:.*$")


@dataclasses.dataclass
class ImageFolder:
    files: list  # paths of the readable images, sorted by class then name
    labels: np.ndarray  # int class index per file
    class_names: list
    skipped: list  # [{"path": ..., "reason": ...}] files that could not be decoded


def resize_image(image, image_size):
    """Any image tensor -> uint8 [size, size, 3] (or [height, width, 3] for a pair), resized with antialiasing."""
    image = tf.image.resize(image, (image_size, image_size) if np.ndim(image_size) == 0 else image_size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


HEADER_BYTES = 32


def _header(contents):
    """The first HEADER_BYTES bytes of `contents`, zeros past its end (tf ops: runs in tf.data)."""
    return tf.strings.substr(tf.strings.join([tf.strings.substr(contents, 0, HEADER_BYTES), "\0" * HEADER_BYTES]),
                             0, HEADER_BYTES)


def _little_endian(b, start, length):
    return sum(b[start + i] * 256**i for i in range(length))


def _big_endian(b, start, length):
    return _little_endian(tf.reverse(b[start : start + length], [0]), 0, length)


def _bytes_equal(head, start, expected):
    return tf.equal(tf.strings.substr(head, start, len(expected)), expected)


def is_jpeg_xl(contents):
    """Whether encoded bytes are JPEG XL (a bare codestream or the ISO BMFF container)."""
    head = _header(contents)
    return _bytes_equal(head, 0, b"\xff\x0a") | _bytes_equal(head, 0, b"\x00\x00\x00\x0cJXL \r\n\x87\n")


def encoded_image_size(contents):
    """(height, width) int64 an encoded image's header declares, read without decoding it: JPEG, PNG,
    GIF, BMP and WebP; (0, 0) for anything else (tf ops: runs in tf.data)."""
    head = _header(contents)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
    bmp_core = _little_endian(b, 14, 4) == 12  # BITMAPCOREHEADER: 16-bit sizes
    bmp_width = tf.where(bmp_core, _little_endian(b, 18, 2), tf.abs(_signed32(_little_endian(b, 18, 4))))
    bmp_height = tf.where(bmp_core, _little_endian(b, 20, 2), tf.abs(_signed32(_little_endian(b, 22, 4))))
    webp = _bytes_equal(head, 0, b"RIFF") & _bytes_equal(head, 8, b"WEBP")
    chunk = tf.strings.substr(head, 12, 4)
    lossless_bits = _little_endian(b, 21, 4)
    webp_size = tf.case([
        (tf.equal(chunk, b"VP8X"), lambda: tf.stack([1 + _little_endian(b, 27, 3), 1 + _little_endian(b, 24, 3)])),
        (tf.equal(chunk, b"VP8L"), lambda: tf.stack([1 + lossless_bits // 2**14 % 2**14, 1 + lossless_bits % 2**14])),
    ], default=lambda: tf.stack([_little_endian(b, 28, 2) % 2**14, _little_endian(b, 26, 2) % 2**14]))
    zero = tf.zeros([2], tf.int64)
    size = tf.where(_bytes_equal(head, 0, b"\x89PNG\r\n\x1a\n"), tf.stack([_big_endian(b, 20, 4), _big_endian(b, 16, 4)]),
           tf.where(_bytes_equal(head, 0, b"GIF8"), tf.stack([_little_endian(b, 8, 2), _little_endian(b, 6, 2)]),
           tf.where(_bytes_equal(head, 0, b"BM"), tf.stack([bmp_height, bmp_width]),
           tf.where(webp, webp_size, zero))))
    size = tf.cond(tf.io.is_jpeg(contents), lambda: tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64),
                   lambda: size)
    return size[0], size[1]


def _signed32(value):
    return tf.where(value >= 2**31, value - 2**32, value)


def size_problem(contents):
    """Why encoded bytes must not be decoded (too many pixels, JPEG XL, empty), in words; None where they may.
    Eager only; `decode_unresized` checks the same in graphs."""
    if not len(contents.numpy() if hasattr(contents, "numpy") else contents):
        return "empty file (0 bytes)"
    if bool(is_jpeg_xl(contents)):
        return "JPEG XL: its size cannot be checked before decoding, so it is not decoded; convert it to PNG or JPEG"
    try:
        height, width = (int(v) for v in encoded_image_size(contents))
    except tf.errors.OpError as error:
        return _op_message(error)
    if height * width > MAX_IMAGE_PIXELS:
        return (f"its header declares {width}x{height} = {height * width:,} pixels, over the limit of "
                f"{MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?); refused before decoding")
    return None


def _op_message(error):
    """The first line of a TensorFlow error, without the op decorations."""
    message = (getattr(error, "message", None) or str(error) or type(error).__name__).splitlines()[0]
    return _TF_OP_DECORATIONS.sub("", message).strip()


def decode_unresized(contents, channels=3):
    """Encoded bytes -> uint8 [H, W, channels] by `tf.io.decode_image`, refused before decoding where the
    header declares more than MAX_IMAGE_PIXELS pixels or the file is JPEG XL (see module doc)."""
    height, width = encoded_image_size(contents)
    pixels = tf.where(is_jpeg_xl(contents), tf.constant(MAX_IMAGE_PIXELS + 1, tf.int64), height * width)
    check = tf.debugging.assert_less_equal(
        pixels, tf.constant(MAX_IMAGE_PIXELS, tf.int64),
        message=f"image refused before decoding: over {MAX_IMAGE_PIXELS:,} pixels, or JPEG XL (size unreadable)",
    )
    with tf.control_dependencies([check]):
        return tf.io.decode_image(contents, channels=channels, expand_animations=False)


def decode_or_reason(contents, channels=3):
    """Encoded bytes -> (uint8 [H, W, channels], None), or (None, why they cannot be decoded, in words). Eager."""
    problem = size_problem(contents)
    if problem:
        return None, problem
    try:
        return decode_unresized(contents, channels).numpy(), None
    except (tf.errors.OpError, ValueError) as error:
        return None, _op_message(error)


def decode_image(contents, image_size):
    """Encoded bytes (JPEG, PNG, GIF or BMP) -> uint8 [size, size, 3]."""
    return resize_image(decode_unresized(contents), image_size)


def read_image_file(path, image_size=None):
    """An image file -> uint8 [H, W, 3], or [size, size, 3] resized as `decode_image` does; a UserError
    naming the file where it is missing or cannot be decoded."""
    if not os.path.isfile(path):
        raise UserError(f"Image file {path!r} does not exist.")
    try:
        contents = tf.io.read_file(path)
    except tf.errors.OpError as error:  # e.g. no permission to read it
        raise UserError(f"Image file {path!r} cannot be read: {_op_message(error)}") from None
    image, problem = decode_or_reason(contents)
    if problem:
        raise UserError(f"{path!r} cannot be decoded as an image: {problem}.")
    return image if image_size is None else resize_image(image, image_size).numpy()


def _undecodable(paths):
    """Indices of `paths` TensorFlow cannot decode as images (one parallel tf.data pass)."""
    indexed = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
    decoded = indexed.map(
        lambda i, path: (i, tf.shape(decode_unresized(tf.io.read_file(path)))),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    readable = {int(i) for i, _ in decoded.as_numpy_iterator()}
    return [i for i in range(len(paths)) if i not in readable]


def _decode_error(path):
    return decode_or_reason(tf.io.read_file(path))[1] or "unreadable"


def scan_image_folder(root, skip_bad_files=True):
    """Lists `root/<class>/<image>`; checks every image decodes. See module doc for bad files."""
    files, labels, class_names = list_class_folder(root, "image")
    bad = _undecodable(files)
    skipped = [{"path": files[i], "reason": _decode_error(files[i])} for i in bad]
    if skipped and not skip_bad_files:
        listing = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        raise UserError(
            f"{len(skipped)} file(s) in {root!r} cannot be decoded as images ({listing}). Remove them, "
            "or set data.skip_bad_files=true to skip and report them."
        )
    keep = np.setdiff1d(np.arange(len(files)), bad)
    labels = np.asarray(labels)[keep]
    for label, name in enumerate(class_names):
        if not np.any(labels == label):
            raise UserError(f"Class folder {os.path.join(root, name)!r} has no readable image.")
    return ImageFolder([files[i] for i in keep], labels, class_names, skipped)


def stratified_split(labels, validation_fraction, test_fraction, seed):
    """Per class, a seeded shuffle cut into train/validation/test; returns split -> sorted indices."""
    rng = np.random.default_rng(seed)
    splits = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(indices) * test_fraction))
        n_validation = int(round(len(indices) * validation_fraction))
        if len(indices) - n_test - n_validation < 1:
            raise UserError(
                f"Class {label} has {len(indices)} image(s): too few to split into train, validation "
                "and test with these fractions."
            )
        splits["test"] += list(indices[:n_test])
        splits["validation"] += list(indices[n_test : n_test + n_validation])
        splits["train"] += list(indices[n_test + n_validation :])
    return {name: np.sort(np.asarray(idx, dtype=int)) for name, idx in splits.items()}


def augmentation_layers(seed):
    """Random flips, rotations and zoom: plant leaves have no preferred orientation."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(0.1, seed=seed),
            keras.layers.RandomZoom(0.1, seed=seed),
        ],
        name="augmentation",
    )


def image_dataset(pairs, batch_size, training, seed, augment=False, cache_file=None):
    """Unbatched (uint8 image, label) pairs -> batched pipeline: cache, shuffle, augment, prefetch.

    Augmentation runs after the cache, so every epoch sees new random views.
    """
    ds = pairs.cache(cache_file or "")
    if training:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment:
        augmentation = augmentation_layers(seed)
        ds = ds.map(
            lambda x, y: (tf.cast(tf.clip_by_value(tf.round(augmentation(x, training=True)), 0, 255), tf.uint8), y),
            num_parallel_calls=AUTOTUNE,
        )
    return ds.prefetch(AUTOTUNE)


def folder_split(folder, indices, image_size):
    """Unbatched (uint8 image, label) pairs of `folder`'s files at `indices`."""
    files = [folder.files[i] for i in indices]
    return tf.data.Dataset.zip(
        (decoded_files(files, image_size), tf.data.Dataset.from_tensor_slices(folder.labels[indices]))
    )


def decoded_files(files, image_size):
    """A dataset of uint8 images decoded from `files`, in order."""
    return tf.data.Dataset.from_tensor_slices(list(files)).map(
        lambda path: decode_image(tf.io.read_file(path), image_size), num_parallel_calls=AUTOTUNE
    )


def cache_file(num_images, image_size, work_dir, split):
    """None (cache in memory) where the split fits comfortably; a file under `work_dir` otherwise."""
    if num_images is not None and num_images * image_size * image_size * 3 <= MEMORY_CACHE_LIMIT_BYTES:
        return None
    os.makedirs(work_dir, exist_ok=True)
    return os.path.join(work_dir, f"cache_{split}_{image_size}")


def load_array(batched):
    """All (images, labels) of a batched dataset as NumPy arrays."""
    images, labels = zip(*batched.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def write_synthetic_image_folder(root, class_names=("circle", "square", "stripes"), per_class=40,
                                 image_size=64, seed=0):
    """Writes a small, learnable image dataset as PNG files in class folders (for --smoke runs).

    Each class draws a different shape in a random colour over a noisy background.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    for name in class_names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
            if name == "circle":
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            elif name == "square":
                mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
            else:
                mask = np.sin((xx + yy) * rng.uniform(12, 20)) > 0
            image = rng.uniform(0, 80, (image_size, image_size, 3))
            image[mask] = rng.uniform(150, 255, 3)
            png = tf.io.encode_png(image.astype(np.uint8))
            tf.io.write_file(os.path.join(root, name, f"{name}_{i:03d}.png"), png)
    return root


def tfds_splits(name, image_size, validation_fraction, test_fraction, data_dir=None):
    """A TFDS image-classification dataset by name -> ({split: dataset of (uint8 image, label)}, class names).

    Uses the dataset's own train/validation/test splits where it has all three; otherwise cuts
    its train split by the fractions with TFDS slicing (TFDS shuffles at preparation; the cut is
    deterministic but not stratified). Downloads on first use, so it needs a network then.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    available = set(builder.info.splits.keys()) if builder.info.splits else set()
    if set(SPLITS) <= available:
        split_names = list(SPLITS)
    else:
        test_end = int(round(100 * test_fraction))
        validation_end = test_end + int(round(100 * validation_fraction))
        split_names = [f"train[{validation_end}%:]", f"train[{test_end}%:{validation_end}%]", f"train[:{test_end}%]"]
    datasets = tfds.load(name, split=split_names, as_supervised=True, data_dir=data_dir)
    class_names = builder.info.features["label"].names
    resized = [
        ds.map(lambda image, label: (resize_image(image, image_size), label), num_parallel_calls=AUTOTUNE)
        for ds in datasets
    ]
    return dict(zip(SPLITS, resized)), class_names
