"""MNIST-style digits: the IDX files (gzip or not) of a local folder, or TFDS `mnist` for users.

    images, labels = mnist.load_digits("tfds:mnist", "test")        # downloads on first use
    images, labels = mnist.load_digits("../shared/assets/data/mnist_t10k")  # t10k-*-idx*-ubyte.gz

Both give uint8 images [n, 28, 28] and int64 labels [n]. The IDX format (LeCun et al.) is a
big-endian header (magic, then one int32 per dimension) followed by the raw bytes; TFDS has no
reader for a local IDX folder, so this module parses it.
"""

import glob
import gzip
import os

import numpy as np

from tfcourse import UserError

IDX_UINT8 = 0x08


def read_idx(path):
    """-> the uint8 array stored in one IDX file (gzip-compressed where the name ends in .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{path!r} cannot be read as an IDX file: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UINT8:
        raise UserError(f"{path!r} is not an unsigned-byte IDX file (its magic number is {data[:4].hex()}).")
    rank = data[3]
    header = 4 + 4 * rank
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], ">u4"))
    if len(data) - header != int(np.prod(shape)):
        raise UserError(f"{path!r} is truncated: its header promises shape {shape} but it holds "
                        f"{len(data) - header} bytes of data.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _one(folder, pattern, what):
    matches = sorted(glob.glob(os.path.join(folder, pattern)))
    if len(matches) != 1:
        raise UserError(f"{folder!r} should hold exactly one {what} IDX file ({pattern}); found {len(matches)}.")
    return matches[0]


def load_digits(source, split="test", data_dir=None):
    """-> (uint8 images [n, 28, 28], int64 labels [n]) from "tfds:NAME" or a folder of IDX files."""
    if source.startswith("tfds:"):
        import tensorflow_datasets as tfds

        images, labels = tfds.as_numpy(tfds.load(source[5:], split=split, as_supervised=True, batch_size=-1,
                                                  data_dir=data_dir))
        return images[..., 0], labels.astype(np.int64)
    if not os.path.isdir(source):
        raise UserError(f"MNIST source {source!r} is neither tfds:NAME nor a folder of IDX files.")
    images_path = _one(source, "*images-idx3-ubyte*", "images")
    labels_path = _one(source, "*labels-idx1-ubyte*", "labels")
    images, labels = read_idx(images_path), read_idx(labels_path).astype(np.int64)
    if len(images) != len(labels):
        raise UserError(f"{source!r}: {len(images)} images but {len(labels)} labels.")
    return images, labels
