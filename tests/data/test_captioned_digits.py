import numpy as np
import pytest

from tfcourse import UserError
from tfcourse.data import captioned_digits, mnist_m


def test_captions_and_tokens():
    assert captioned_digits.caption(7, 0, 0) == "a red seven on the left"
    assert captioned_digits.caption(2, None, 1) == "a two on the right"
    assert captioned_digits.caption(7, identifier=True) == "a sks seven"
    tokens = captioned_digits.tokenizer()(["a sks red seven on the left", "", "a seven"]).numpy()
    vocabulary = captioned_digits.tokenizer().get_vocabulary()
    assert tokens.shape == (3, captioned_digits.SEQUENCE_LENGTH)
    assert [vocabulary[i] for i in tokens[0, :7]] == "a sks red seven on the left".split() and tokens[0, 7] == 0
    assert not tokens[1].any()  # the empty caption: all padding


def test_every_caption_is_labelled_with_what_it_says():
    texts, labels = captioned_digits.every_caption()
    assert len(texts) == len(set(texts)) == 1 + 10 * 5 * 3  # each digit with colour or none, side or none; and ""
    assert texts[0] == "" and [labels[name][0] for name in ("digit", "colour", "position")] == [10, 4, 2]
    for text, digit, colour, position in zip(texts[1:], labels["digit"][1:], labels["colour"][1:], labels["position"][1:]):
        assert text == captioned_digits.caption(digit, None if colour == 4 else colour, None if position == 2 else position)
    assert "a red seven on the left" in texts and "a seven" in texts and "a seven on the right" in texts


def test_render_paints_the_digit_in_its_colour_on_its_side():
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 6:22, 12:16] = 255  # a bar: a "one"
    grey = [np.full((60, 60, 3), 100, np.uint8)]
    for colour, position in ((0, 0), (2, 1)):
        images, masks = captioned_digits.render(digit, np.array([[1, colour, position]]), grey, [0], seed=0)
        image = images[0].astype(int)
        painted = np.abs(image - 100).sum(-1) > 60
        assert masks.shape == (1, 32, 32) and masks.max() == 1.0
        assert (masks[0][painted] > 0.2).all() and (image[masks[0] == 0] == 100).all()  # the mask is where the colour went
        columns = np.nonzero(painted.any(0))[0]
        assert (columns.mean() < 16) == (position == 0)
        rgb = image[painted].mean(0)
        assert np.argmax(rgb) == np.argmax(list(captioned_digits.COLOURS.values())[colour])
        assert (image[~np.abs(image - 100).any(-1)] == 100).all()  # the background is untouched elsewhere


def test_splits_keep_digits_and_photos_apart_and_hold_combinations_out():
    digits, labels, _ = mnist_m.synthetic_digits(200, num_classes=4, seed=0)
    photos = mnist_m.synthetic_photos(10, seed=0)
    held_out = captioned_digits.held_out_combinations(3, seed=1)
    splits = captioned_digits.build_splits(digits, labels, photos, {"train": 2, "validation": 1, "test": 1},
                                           {"train": 0.8, "validation": 0.1, "test": 0.1}, held_out, seed=0)
    assert [len(s.images) for s in splits.values()] == [320, 20, 20]
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not set(splits[a].digit_ids) & set(splits[b].digit_ids)
        assert not set(splits[a].photo_ids) & set(splits[b].photo_ids)
    train = splits["train"].attributes
    assert not (train[:, None, :] == held_out[None]).all(-1).any()
    assert splits["test"].images.shape == (20, 32, 32, 3) and splits["test"].images.dtype == np.uint8
    assert set(np.unique(train[:, 1])) == {0, 1, 2, 3} and set(np.unique(train[:, 2])) == {0, 1}
    with pytest.raises(UserError, match="held_out_combinations = 11"):
        captioned_digits.held_out_combinations(11, seed=0)


def test_a_64_px_render_is_the_32_px_layout_at_twice_the_resolution():
    digits, labels, _ = mnist_m.synthetic_digits(6, num_classes=4, seed=0)
    photos = mnist_m.synthetic_photos(3, seed=0)
    attributes = np.array([[labels[i], i % 4, i % 2] for i in range(6)])
    small, small_masks = captioned_digits.render(digits, attributes, photos, [0, 1, 2, 0, 1, 2], seed=5)
    large, large_masks = captioned_digits.render(digits, attributes, photos, [0, 1, 2, 0, 1, 2], seed=5, size=64)
    assert large.shape == (6, 64, 64, 3) and large_masks.shape == (6, 64, 64)
    split = captioned_digits.CaptionedSplit(large, attributes, np.arange(6), np.zeros(6, int), large_masks)
    shrunk = split.downsampled(32)
    assert shrunk.images.shape == small.shape and shrunk.images.dtype == np.uint8
    np.testing.assert_array_equal(shrunk.attributes, attributes)
    # the same crops, digit places and colours: shrunk back, the two differ only by resampling
    assert np.abs(shrunk.images.astype(int) - small.astype(int)).mean() < 12
    assert np.abs(shrunk.masks - small_masks).mean() < 0.05
    columns = np.arange(64)
    for mask, (_, _, side) in zip(large_masks, attributes):
        centre = (mask.sum(0) * columns).sum() / mask.sum()
        assert (centre < 32) == (side == 0)
    with pytest.raises(UserError, match="image size 48"):
        captioned_digits.render(digits, attributes, photos, [0] * 6, seed=5, size=48)
