import os

import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import images


def _write_png(path, value, size=20):
    tf.io.write_file(str(path), tf.io.encode_png(np.full((size, size, 3), value, np.uint8)))


@pytest.fixture
def folder(tmp_path):
    for name, value in (("healthy", 40), ("rust", 200)):
        os.makedirs(tmp_path / name)
        for i in range(5):
            _write_png(tmp_path / name / f"{i}.png", value + i)
    return tmp_path


def test_scan_lists_classes_and_files(folder):
    scanned = images.scan_image_folder(str(folder))
    assert scanned.class_names == ["healthy", "rust"]
    assert scanned.labels.tolist() == [0] * 5 + [1] * 5
    assert scanned.skipped == []


def test_corrupt_and_non_image_files_are_counted_named_and_skipped(folder):
    (folder / "rust" / "truncated.png").write_bytes(tf.io.encode_png(np.zeros((20, 20, 3), np.uint8)).numpy()[:40])
    (folder / "healthy" / "notes.txt").write_text("not an image")
    scanned = images.scan_image_folder(str(folder))
    assert sorted(os.path.basename(s["path"]) for s in scanned.skipped) == ["notes.txt", "truncated.png"]
    assert all(s["reason"] for s in scanned.skipped)
    assert len(scanned.files) == 10
    with pytest.raises(UserError, match=r"2 file\(s\).*skip_bad_files"):
        images.scan_image_folder(str(folder), skip_bad_files=False)


def test_empty_class_folder_and_single_class_are_errors(folder, tmp_path):
    os.makedirs(folder / "scab")
    with pytest.raises(UserError, match="scab.*empty"):
        images.scan_image_folder(str(folder))
    single = tmp_path / "single"
    os.makedirs(single / "only")
    _write_png(single / "only" / "a.png", 1)
    with pytest.raises(UserError, match="at least two"):
        images.scan_image_folder(str(single))
    with pytest.raises(UserError, match="not a folder"):
        images.scan_image_folder(str(tmp_path / "missing"))


def test_split_is_deterministic_stratified_and_disjoint():
    labels = np.repeat([0, 1, 2], [45, 45, 30])
    first = images.stratified_split(labels, 0.2, 0.2, seed=7)
    assert all(np.array_equal(first[k], v) for k, v in images.stratified_split(labels, 0.2, 0.2, seed=7).items())
    other = images.stratified_split(labels, 0.2, 0.2, seed=8)
    assert not np.array_equal(first["test"], other["test"])
    assert np.bincount(labels[first["test"]]).tolist() == [9, 9, 6]
    assert np.bincount(labels[first["validation"]]).tolist() == [9, 9, 6]
    together = np.concatenate(list(first.values()))
    assert sorted(together.tolist()) == list(range(len(labels)))


def test_split_refuses_a_class_too_small():
    with pytest.raises(UserError, match="too few"):
        images.stratified_split(np.array([0, 0, 0, 0, 0, 1, 1]), 0.4, 0.4, seed=0)


def test_pipeline_shapes_dtypes_and_augmentation(folder):
    scanned = images.scan_image_folder(str(folder))
    pairs = images.folder_split(scanned, np.arange(10), image_size=32)
    train = images.image_dataset(pairs, batch_size=4, training=True, seed=0, augment=True)
    x, y = next(iter(train))
    assert x.shape == (4, 32, 32, 3) and x.dtype == tf.uint8 and y.dtype == tf.int64
    evaluation = images.image_dataset(pairs, batch_size=4, training=False, seed=0)
    pixels, labels = images.load_array(evaluation)
    assert pixels.shape == (10, 32, 32, 3) and labels.tolist() == scanned.labels.tolist()
    assert pixels[0].min() == 40 and pixels[5].max() == 200  # flat images survive the resize exactly


def test_synthetic_folder_is_a_valid_dataset(tmp_path):
    root = images.write_synthetic_image_folder(str(tmp_path / "synthetic"), per_class=4, image_size=32)
    scanned = images.scan_image_folder(root)
    assert scanned.class_names == ["circle", "square", "stripes"] and len(scanned.files) == 12


def test_tfds_dataset_by_name_uses_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        splits, class_names = images.tfds_splits("plant_village", 32, 0.2, 0.2, data_dir=str(tmp_path))
    assert len(class_names) == 38 and class_names[0].startswith("Apple")
    x, y = next(iter(splits["train"]))
    assert x.shape == (32, 32, 3) and x.dtype == tf.uint8 and 0 <= int(y) < 38
