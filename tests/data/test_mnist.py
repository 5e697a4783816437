import gzip
import os

import numpy as np
import pytest

from tfcourse import UserError
from tfcourse.data import mnist


def _write_idx(path, array, compress=True):
    header = bytes([0, 0, mnist.IDX_UINT8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_folder(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, compress=False)
    read_images, read_labels = mnist.load_digits(str(tmp_path))
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    assert read_labels.dtype == np.int64


def test_truncated_and_foreign_files_are_named(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    _write_idx(path, np.zeros((4, 28, 28)), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated"):
        mnist.read_idx(str(path))
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(UserError, match="not an unsigned-byte IDX file"):
        mnist.read_idx(str(path))
    with pytest.raises(UserError, match="exactly one labels"):
        mnist.load_digits(str(tmp_path))


def test_real_mnist_test_set(assets_dir):
    images, labels = mnist.load_digits(os.path.join(assets_dir, "data", "mnist_t10k"))
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist()[:3] == [980, 1135, 1032]  # MNIST's published test counts
