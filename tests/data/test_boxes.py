import os

import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import boxes


def test_brightness_mask_finds_the_object_and_clears_jpeg_specks():
    image = np.zeros((100, 100, 3), np.uint8)
    image[20:60, 30:90] = [40, 160, 40]
    image[95, 5] = [200, 200, 200]  # a lone speck in the black
    mask = boxes.brightness_mask(image, threshold=30)
    expected = np.zeros((100, 100), bool)
    expected[20:60, 30:90] = True
    np.testing.assert_array_equal(mask, expected)
    cropped, cropped_mask = boxes.crop_to_mask(image, mask)
    assert cropped.shape == (40, 60, 3) and cropped_mask.all()
    with pytest.raises(UserError, match="empty"):
        boxes.crop_to_mask(image, np.zeros((100, 100), bool))


@pytest.mark.parametrize("seed", range(5))
def test_pasted_box_is_exactly_the_changed_pixels(seed):
    rng = np.random.default_rng(seed)
    background = np.full((90, 120, 3), 10, np.uint8)
    obj = np.zeros((40, 30, 3), np.uint8)
    obj[5:35, 5:25] = 250
    mask = obj.max(-1) > 30
    image, (x0, y0, x1, y1) = boxes.paste(background, obj, mask, rng, scale_range=(0.3, 0.9))
    changed = np.abs(image.astype(int) - background).max(-1) > 120  # at least half the object blended in
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    assert [x0, y0, x1, y1] == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 90
    longest = max(x1 - x0, y1 - y0)  # the object was cropped to its mask, so the box spans the scaled object
    assert 0.3 * 90 - 2 <= longest <= 0.9 * 90 + 2


def test_pasted_voc_keeps_objects_and_backgrounds_apart_per_split(tmp_path):
    # Each split's backgrounds have their own grey level; each object its own colour.
    backgrounds = [np.full((64, 80, 3), level, np.uint8) for level in (10, 11, 40, 41, 70, 71)]
    background_splits = {"train": np.array([0, 1]), "validation": np.array([2, 3]), "test": np.array([4, 5])}
    objects = [(np.full((20, 20, 3), 100 + 20 * i, np.uint8), np.ones((20, 20), bool)) for i in range(6)]
    object_splits = {"train": np.array([0, 1, 2]), "validation": np.array([3, 4]), "test": np.array([5])}
    counts = boxes.write_pasted_voc(str(tmp_path), objects, [0, 1, 0, 1, 0, 1], ["a", "b"], backgrounds,
                                    object_splits, background_splits, {"train": 3, "validation": 2, "test": 2}, seed=0)
    assert counts == {"train": 9, "validation": 4, "test": 2}
    folder = boxes.read_voc_folder(str(tmp_path))
    assert folder.class_names == ["a", "b"] and folder.skipped == []
    levels = {"train": (10, 11), "validation": (40, 41), "test": (70, 71)}
    for split, indices in folder.splits.items():
        assert len(indices) == counts[split]
        for i in indices:
            image = tf.io.decode_jpeg(tf.io.read_file(folder.files[i])).numpy().astype(int)
            x0, y0, x1, y1 = np.round(folder.boxes[i] * [80, 64, 80, 64]).astype(int)
            outside = np.ones((64, 80), bool)
            outside[y0:y1, x0:x1] = False
            assert np.median(image[outside]) in range(min(levels[split]) - 3, max(levels[split]) + 4)
            colour = np.median(image[y0:y1, x0:x1])
            source = int(round((colour - 100) / 20))
            assert source in object_splits[split]


def test_voc_round_trip_normalises_boxes(tmp_path):
    image = np.zeros((50, 100, 3), np.uint8)
    boxes.write_voc_example(str(tmp_path), "one", image, [10, 5, 60, 45], "cat")
    boxes.write_voc_example(str(tmp_path), "two", image, [0, 0, 100, 50], "dog")
    folder = boxes.read_voc_folder(str(tmp_path))
    assert folder.class_names == ["cat", "dog"] and folder.splits == {} and folder.skipped == []
    np.testing.assert_allclose(folder.boxes, [[0.1, 0.1, 0.6, 0.9], [0, 0, 1, 1]])
    ds = boxes.box_dataset(folder.files, folder.boxes, folder.labels, 32)
    x, y = next(iter(ds))
    assert x.shape == (32, 32, 3) and x.dtype == tf.uint8 and y["class"] == 0
    np.testing.assert_allclose(y["box"], [0.1, 0.1, 0.6, 0.9])


def _annotation(objects, size="<size><width>40</width><height>30</height><depth>3</depth></size>", prolog=""):
    body = "".join(f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
    return f"{prolog}<annotation>{size}{body}</annotation>"


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
                  '<annotation><object><name>&lol2;</name></object></annotation>')


def test_bad_files_are_counted_with_reasons_not_dropped_silently(tmp_path):
    root = str(tmp_path)
    image = np.zeros((30, 40, 3), np.uint8)
    boxes.write_voc_example(root, "good", image, [1, 2, 30, 20], "cat")
    annotations = {
        "two_objects": _annotation([("cat", (0, 0, 5, 5)), ("cat", (5, 5, 9, 9))]),
        "no_object": _annotation([]),
        "outside": _annotation([("cat", (0, 0, 41, 10))]),
        "inverted": _annotation([("cat", (20, 0, 10, 10))]),
        "not_a_number": _annotation([("cat", ("a", 0, 10, 10))]),
        "wrong_size": _annotation([("cat", (0, 0, 5, 5))], size="<size><width>80</width><height>30</height></size>"),
        "entities": BILLION_LAUGHS,
        "broken": "<annotation><object>",
        "unannotated": None,
    }
    for name, xml in annotations.items():
        tf.io.write_file(os.path.join(root, "JPEGImages", name + ".jpg"), tf.io.encode_jpeg(image))
        if xml is not None:
            with open(os.path.join(root, "Annotations", name + ".xml"), "w") as f:
                f.write(xml)
    with open(os.path.join(root, "JPEGImages", "corrupt.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    with open(os.path.join(root, "Annotations", "corrupt.xml"), "w") as f:
        f.write(_annotation([("cat", (0, 0, 5, 5))]))
    with open(os.path.join(root, "Annotations", "orphan.xml"), "w") as f:
        f.write(_annotation([("cat", (0, 0, 5, 5))]))

    folder = boxes.read_voc_folder(root)
    assert [os.path.basename(f) for f in folder.files] == ["good.jpg"]
    reasons = {os.path.splitext(os.path.basename(s["path"]))[0]: s["reason"] for s in folder.skipped}
    assert len(folder.skipped) == 11
    assert "2 objects" in reasons["two_objects"] and "0 objects" in reasons["no_object"]
    assert "outside" in reasons["outside"] and "invalid box" in reasons["inverted"]
    assert "numeric" in reasons["not_a_number"] and "80x30" in reasons["wrong_size"]
    assert "document type declaration" in reasons["entities"] and "not well-formed" in reasons["broken"]
    assert "no annotation" in reasons["unannotated"] and "no image" in reasons["orphan"]
    assert reasons["corrupt"]  # the decoder's own message

    with pytest.raises(UserError, match="11 file"):
        boxes.read_voc_folder(root, skip_bad_files=False)
    with pytest.raises(UserError, match="no usable image"):  # an object of another class is a bad file too
        boxes.read_voc_folder(root, class_names=["dog"])


def test_parse_refuses_doctype_before_expanding_entities():
    with pytest.raises(ValueError, match="document type declaration"):
        boxes.parse_annotation(BILLION_LAUGHS.encode())
    name, box, size = boxes.parse_annotation(_annotation([("leaf", (1, 2, 3.5, 4))]).encode())
    assert (name, box, size) == ("leaf", [1.0, 2.0, 3.5, 4.0], (40, 30))


def test_random_flip_moves_boxes_with_their_pixels():
    image = np.zeros((8, 20, 20, 3), np.uint8)
    image[:, 4:10, 2:6] = 255  # x 2..6, y 4..10
    box = np.tile([[2 / 20, 4 / 20, 6 / 20, 10 / 20]], (8, 1)).astype("float32")
    tf.random.set_seed(0)
    flipped, targets = boxes.random_horizontal_flip(tf.constant(image), {"box": tf.constant(box), "class": tf.zeros(8)})
    flipped, flipped_boxes = flipped.numpy(), targets["box"].numpy()
    assert 0 < np.sum(flipped_boxes[:, 0] > 0.5) < 8  # some flipped, some not
    for picture, (x0, y0, x1, y1) in zip(flipped, flipped_boxes * 20):
        cols = np.flatnonzero(picture.max(axis=(0, 2)))
        assert (cols[0], cols[-1] + 1) == (round(x0), round(x1)) and (round(y0), round(y1)) == (4, 10)
