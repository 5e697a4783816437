"""Image datasets: a folder of class folders (or a TFDS dataset) to tf.data pipelines.

A folder is scanned once: every file is decoded by TensorFlow's own decoder in a parallel
tf.data pass, and files that fail (corrupt, truncated, not an image) are counted, named in the
report and skipped, or stop the run when `skip_bad_files` is off. The split into
train/validation/test is stratified per class and fixed by a seed.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data.folders import list_class_folder

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation", "test")
MEMORY_CACHE_LIMIT_BYTES = 2 * 1024**3


@dataclasses.dataclass
class ImageFolder:
    files: list  # paths of the readable images, sorted by class then name
    labels: np.ndarray  # int class index per file
    class_names: list
    skipped: list  # [{"path": ..., "reason": ...}] files that could not be decoded


def resize_image(image, image_size):
    """Any image tensor -> uint8 [size, size, 3], resized with antialiasing."""
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _decode(contents):
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def decode_image(contents, image_size):
    """Encoded bytes (JPEG, PNG, GIF or BMP) -> uint8 [size, size, 3]."""
    return resize_image(_decode(contents), image_size)


def read_image_file(path, image_size=None):
    """An image file -> uint8 [H, W, 3], or [size, size, 3] resized as `decode_image` does; a UserError
    naming the file where it is missing or cannot be decoded."""
    if not os.path.isfile(path):
        raise UserError(f"Image file {path!r} does not exist.")
    try:
        contents = tf.io.read_file(path)
        image = _decode(contents) if image_size is None else decode_image(contents, image_size)
        return image.numpy()
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(f"{path!r} cannot be decoded as an image: {str(error).splitlines()[0]}") from None


def _undecodable(paths):
    """Indices of `paths` TensorFlow cannot decode as images (one parallel tf.data pass)."""
    indexed = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
    decoded = indexed.map(
        lambda i, path: (i, tf.shape(_decode(tf.io.read_file(path)))),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    readable = {int(i) for i, _ in decoded.as_numpy_iterator()}
    return [i for i in range(len(paths)) if i not in readable]


def _decode_error(path):
    try:
        _decode(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError) as error:
        return error.message.splitlines()[0] if hasattr(error, "message") else str(error)
    return "unreadable"


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
