import os

import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import mnist, mnist_m


def test_blend_is_absolute_difference_of_a_photo_patch_and_the_digit():
    photo = np.arange(40 * 50 * 3, dtype=np.int64).reshape(40, 50, 3) % 251
    photo = photo.astype(np.uint8)
    digits = np.zeros((3, 28, 28), np.uint8)
    digits[:, 10:18, 12:15] = 255
    images, photo_ids = mnist_m.blend(digits, [photo], [0], seed=3)
    assert images.shape == (3, 28, 28, 3) and images.dtype == np.uint8 and list(photo_ids) == [0, 0, 0]
    for image in images:
        # find the patch: background pixels equal the photo, stroke pixels equal 255 - photo
        matches = [(t, left) for t in range(13) for left in range(23)
                   if np.array_equal(image[:5], photo[t : t + 5, left : left + 28])]
        assert len(matches) >= 1
        t, left = matches[0]
        patch = photo[t : t + 28, left : left + 28].astype(int)
        np.testing.assert_array_equal(image[10:18, 12:15], 255 - patch[10:18, 12:15])
        np.testing.assert_array_equal(image[0], patch[0])


def test_blend_is_seeded_and_draws_only_the_given_photos():
    photos = mnist_m.synthetic_photos(6, seed=1)
    digits, _, _ = mnist_m.synthetic_digits(50, seed=2)
    a, ids_a = mnist_m.blend(digits, photos, [1, 4], seed=7)
    b, ids_b = mnist_m.blend(digits, photos, [1, 4], seed=7)
    c, _ = mnist_m.blend(digits, photos, [1, 4], seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ids_a, ids_b)
    assert not np.array_equal(a, c)
    assert set(ids_a) == {1, 4}


def test_split_photos_is_disjoint_and_complete():
    train, test = mnist_m.split_photos(100, 0.2, seed=0)
    assert len(test) == 20 and len(train) == 80
    assert not set(train) & set(test) and set(train) | set(test) == set(range(100))
    train2, test2 = mnist_m.split_photos(2, 0.9, seed=0)
    assert len(train2) == 1 and len(test2) == 1
    with pytest.raises(UserError, match="at least 2"):
        mnist_m.split_photos(1, 0.2, seed=0)


def test_synthetic_digits_and_photos():
    digits, labels, names = mnist_m.synthetic_digits(40, num_classes=4, seed=0)
    assert digits.shape == (40, 28, 28) and digits.dtype == np.uint8 and names == ["bar", "dash", "cross", "ring"]
    assert set(labels) == {0, 1, 2, 3}
    assert all(image.max() >= 200 and (image > 0).mean() < 0.3 for image in digits)  # a stroke on black
    photos = mnist_m.synthetic_photos(3, size=64, seed=0)
    assert len(photos) == 3 and photos[0].shape == (64, 64, 3) and photos[0].std() > 20
    with pytest.raises(UserError, match="classes"):
        mnist_m.synthetic_digits(4, num_classes=9)


def test_load_backgrounds_counts_bad_files(tmp_path):
    for i, photo in enumerate(mnist_m.synthetic_photos(2, size=40)):
        tf.io.write_file(str(tmp_path / f"p{i}.png"), tf.io.encode_png(photo))
    tf.io.write_file(str(tmp_path / "tiny.png"), tf.io.encode_png(np.zeros((10, 10, 3), np.uint8)))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    photos, skipped = mnist_m.load_backgrounds(str(tmp_path))
    assert len(photos) == 2 and photos[0].shape == (40, 40, 3)
    assert sorted(os.path.basename(s["file"]) for s in skipped) == ["broken.jpg", "tiny.png"]
    with pytest.raises(UserError, match="does not exist"):
        mnist_m.load_backgrounds(str(tmp_path / "missing"))


def test_real_mnist_m_from_the_assets(assets_dir):
    photos, skipped = mnist_m.load_backgrounds(os.path.join(assets_dir, "data", "bsds500", "images"))
    assert len(photos) == 100 and not skipped and max(photos[0].shape[:2]) == 224
    digits, labels = mnist.load_digits(os.path.join(assets_dir, "data", "mnist_t10k"))
    images, photo_ids = mnist_m.blend(digits[:200], photos, np.arange(100), seed=0)
    assert images.shape == (200, 28, 28, 3)
    # colour: the channels differ (the source digits are grey), and strokes invert the photo
    assert np.abs(images[..., 0].astype(int) - images[..., 1]).mean() > 5
    assert np.array_equal(mnist_m.grey_to_rgb(digits[:2])[..., 2], digits[:2])
