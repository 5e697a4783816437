import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfcourse import UserError
from tfcourse.data import boxes, masks


def _leaf(height=30, width=18):
    """An asymmetric object on black: a bright L shape, so every rotation and flip looks different."""
    mask = np.zeros((height, width), bool)
    mask[2:-2, 2:7] = True
    mask[-8:-2, 2:-2] = True
    image = np.zeros((height, width, 3), np.uint8)
    image[mask] = (40, 200, 60)
    return image, mask


def test_rotation_by_quarter_turns_matches_rot90_and_keeps_the_area():
    image, mask = _leaf()
    image, mask = boxes.crop_to_mask(image, mask)
    quarter = boxes.crop_to_mask(*masks.rotate(image, mask, 90))[1]
    assert quarter.shape == mask.T.shape
    assert np.array_equal(quarter, np.rot90(mask, 1)) or np.array_equal(quarter, np.rot90(mask, -1))
    for degrees in (0, 33, 180, 271):
        rotated_image, rotated = masks.rotate(image, mask, degrees)
        assert abs(int(rotated.sum()) - int(mask.sum())) <= 0.08 * mask.sum(), degrees
        assert rotated_image[rotated].mean() > 60  # the object's pixels came with it
    assert boxes.crop_to_mask(*masks.rotate(image, mask, 33))[1].shape != mask.shape


def test_paste_keeps_the_background_outside_the_mask_and_the_object_inside():
    rng = np.random.default_rng(0)
    background = np.full((64, 64, 3), 7, np.uint8)
    image, mask = masks.paste_with_mask(background, *_leaf(), rng, (0.5, 0.5))
    assert mask.dtype == bool and mask.shape == (64, 64) and 0 < mask.sum() < 64 * 64
    assert np.all(image[~mask] == 7)  # hard edges: the mask is exactly the pasted pixels
    assert np.all(image[mask].max(axis=-1) > 7)
    rows, cols = np.nonzero(mask)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 == pytest.approx(32, abs=3)  # longest side = 0.5 x 64


def test_pasted_folder_round_trips_with_disjoint_sources(tmp_path):
    objects, _ = boxes.synthetic_shapes(per_class=2, seed=0)  # 6 objects
    backgrounds = boxes.textured_backgrounds(6, seed=0)
    object_splits = {"train": [0, 1, 2, 3], "validation": [4], "test": [5]}
    background_splits = {"train": [0, 1, 2, 3], "validation": [4], "test": [5]}
    counts = masks.write_pasted_segmentation(str(tmp_path), objects, backgrounds, object_splits, background_splits,
                                             {"train": 2, "validation": 1, "test": 1}, seed=3, image_size=64)
    assert counts == {"train": 8, "validation": 1, "test": 1}
    folder = masks.read_segmentation_folder(str(tmp_path))
    assert folder.skipped == [] and len(folder.files) == 10
    names = {split: {os.path.basename(folder.files[i]) for i in idx} for split, idx in folder.splits.items()}
    assert all(n.startswith("train_000") for n in names["train"]) and names["test"] == {"test_0005_0.jpg"}
    pairs = list(masks.mask_dataset(folder.files, folder.masks, 64).as_numpy_iterator())
    for (image, mask), mask_file in zip(pairs, folder.masks):
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        np.testing.assert_array_equal(mask, masks.object_mask(masks.read_label_map(mask_file)))
        assert set(np.unique(mask)) == {0, 1}
    # the mask is the pasted object: its pixels are brighter than the dark textured background
    image, mask = pairs[0]
    assert image[mask == 1].mean() > image[mask == 0].mean() + 50


def test_a_palette_label_map_is_read_as_indices_and_255_is_ignored(tmp_path):
    labels = np.array([[0, 15, 255], [0, 0, 3]], np.uint8)
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    palette.save(tmp_path / "m.png")
    np.testing.assert_array_equal(masks.read_label_map(str(tmp_path / "m.png")), labels)
    np.testing.assert_array_equal(masks.object_mask(labels), [[0, 1, 255], [0, 0, 1]])
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="palette or 8-bit grey"):
        masks.read_label_map(str(tmp_path / "rgb.png"))


def _voc(root, names):
    label_map = np.zeros((16, 20), np.uint8)
    label_map[4:10, 6:12] = 1
    for name in names:
        masks.write_example(str(root), name, np.full((16, 20, 3), 100, np.uint8), label_map)


def test_bad_files_are_counted_and_named_or_stop_the_run(tmp_path):
    _voc(tmp_path, ["good", "no_mask", "corrupt", "empty", "small"])
    os.remove(tmp_path / "SegmentationClass" / "no_mask.png")
    (tmp_path / "JPEGImages" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    tf.io.write_file(str(tmp_path / "SegmentationClass" / "empty.png"), tf.io.encode_png(np.zeros((16, 20, 1), np.uint8)))
    tf.io.write_file(str(tmp_path / "SegmentationClass" / "small.png"), tf.io.encode_png(np.ones((8, 8, 1), np.uint8)))
    tf.io.write_file(str(tmp_path / "SegmentationClass" / "orphan.png"), tf.io.encode_png(np.ones((8, 8, 1), np.uint8)))
    folder = masks.read_segmentation_folder(str(tmp_path))
    assert [os.path.basename(f) for f in folder.files] == ["good.jpg"] and folder.splits == {}
    reasons = {os.path.basename(s["path"]): s["reason"] for s in folder.skipped}
    assert set(reasons) == {"orphan.png", "no_mask.jpg", "corrupt.jpg", "empty.jpg", "small.jpg"}
    assert "no image of that name" in reasons["orphan.png"] and "no label map" in reasons["no_mask.jpg"]
    assert "no object pixel" in reasons["empty.jpg"] and "8x8 but the image is 20x16" in reasons["small.jpg"]
    with pytest.raises(UserError, match=r"5 file\(s\) .*corrupt.jpg"):
        masks.read_segmentation_folder(str(tmp_path), skip_bad_files=False)
    with pytest.raises(UserError, match="JPEGImages' is missing"):
        masks.read_segmentation_folder(str(tmp_path / "JPEGImages"))


def test_box_jitter_and_interior_point():
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 5:20] = 1
    mask[12, 40] = masks.IGNORE  # ignored pixels are not object
    box = masks.mask_box(tf.constant(mask)).numpy()
    np.testing.assert_array_equal(box, [5, 10, 20, 30])
    jittered = np.stack([masks.jitter_box(tf.constant(box), 50, 0.2).numpy() for _ in range(200)])
    assert np.all(np.abs(jittered - box) <= 0.2 * np.array([15, 20, 15, 20]) + 1e-4)
    assert np.all(jittered >= 0) and np.all(jittered <= 50) and jittered.std(axis=0).min() > 0.5
    x, y = masks.interior_point(mask)
    assert mask[int(y), int(x)] == 1 and abs(x - 12.5) <= 3 and abs(y - 20) <= 3  # near the middle
    ring = np.zeros((30, 30), np.uint8)
    ring[5:25, 5:25] = 1
    ring[9:21, 9:21] = 0  # the middle is background: the point must still be on the object
    x, y = masks.interior_point(ring)
    assert ring[int(y), int(x)] == 1
