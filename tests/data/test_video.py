import os

import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import video
from tfcourse.data.boxes import textured_backgrounds
from tfcourse.data.images import read_image_file

SIZE = 48
FORMATS = ("mp4", "avi", "gif")
# Mean absolute error (0-255) of a textured 48 px clip read back; measured 5.5 / 5.9 / 3.1 (4:2:0 chroma, palette)
MAX_ROUND_TRIP_ERROR = {"mp4": 7.0, "avi": 8.0, "gif": 6.0}


@pytest.fixture(scope="module")
def backgrounds():
    return textured_backgrounds(3, seed=0, height=60, width=80)


def action_clip(backgrounds, action="right", seed=0, num_frames=12, size=SIZE):
    params = video.sample_action_params(action, np.random.default_rng(seed), num_frames, size, len(backgrounds))
    return video.render_action_clip(params, backgrounds, size)


def grey_ramp(num_frames, step, size=16):
    """Frame i is uniformly grey at brightness i * step."""
    return np.stack([np.full((size, size, 3), i * step, dtype=np.uint8) for i in range(num_frames)])


@pytest.mark.parametrize("extension", FORMATS)
def test_round_trip_keeps_frames_shape_and_pixels(tmp_path, backgrounds, extension):
    clip = action_clip(backgrounds)
    path = video.write_video(str(tmp_path / f"clip.{extension}"), clip)
    assert video.count_frames(path) == len(clip)
    read = video.read_video(path, num_frames=len(clip), stride=1, size=SIZE)
    assert read.shape == clip.shape and read.dtype == np.float32
    assert 0.0 <= read.min() and read.max() <= 1.0
    assert np.abs(read * 255 - clip).mean() < MAX_ROUND_TRIP_ERROR[extension]


@pytest.mark.parametrize("extension", FORMATS)
def test_stride_and_num_frames_pick_frames_from_zero(tmp_path, extension):
    path = video.write_video(str(tmp_path / f"ramp.{extension}"), grey_ramp(20, step=10))
    clip = video.read_video(path, num_frames=5, stride=3, size=8)
    assert clip.shape == (5, 8, 8, 3)
    np.testing.assert_allclose(clip.mean(axis=(1, 2, 3)) * 255, [0, 30, 60, 90, 120], atol=3)


def test_resize_crops_the_centre_square():
    frames = np.zeros((2, 20, 40, 3), np.uint8)
    frames[:, :, 10:30] = 200  # the centre 20x20 square
    resized = video.resize_clip(frames, 10).numpy()
    assert resized.shape == (2, 10, 10, 3) and np.all(resized == 200)


def test_unreadable_videos_raise_user_error_naming_the_file(tmp_path, backgrounds):
    good = {ext: video.write_video(str(tmp_path / f"good.{ext}"), action_clip(backgrounds)) for ext in ("mp4", "avi")}
    bad = {"zero.mp4": b"", "text.mp4": b"this is a text file, not a video\n" * 20,
           "no_frames.gif": b"GIF89a\x10\x00\x10\x00\x00\x00\x00;"}
    for ext, path in good.items():
        data = open(path, "rb").read()
        bad[f"truncated.{ext}"] = data[: len(data) // 2]
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=name) as raised:
            video.read_video(str(tmp_path / name), num_frames=4, stride=2, size=SIZE)
        assert not isinstance(raised.value, video.VideoTooShortError)
    with pytest.raises(UserError, match="does not exist"):
        video.read_video(str(tmp_path / "missing.mp4"), 4, 2, SIZE)


def test_too_short_video_says_how_many_frames_it_has_and_needs(tmp_path):
    path = video.write_video(str(tmp_path / "short.gif"), grey_ramp(5, step=20))
    with pytest.raises(video.VideoTooShortError, match=r"short.gif.*5 frame.*needs 7") as raised:
        video.read_video(path, num_frames=4, stride=2, size=8)
    assert (raised.value.frames, raised.value.needed) == (5, 7)
    assert video.read_video(path, num_frames=3, stride=2, size=8).shape == (3, 8, 8, 3)  # exactly enough


def test_folder_scan_counts_each_reason_and_keeps_the_rest(tmp_path, backgrounds):
    root = tmp_path / "videos"
    for label, name in enumerate(["jump", "wave"]):
        (root / name).mkdir(parents=True)
        for i, ext in enumerate(["mp4", "AVI", "gif"]):
            video.write_video(str(root / name / f"{name}_{i}.{ext}"), action_clip(backgrounds, seed=label * 10 + i))
    (root / "jump" / "empty.mp4").write_bytes(b"")
    (root / "wave" / "notes.MP4").write_text("not a video")
    video.write_video(str(root / "wave" / "short.gif"), grey_ramp(3, step=50))
    (root / "wave" / "readme.txt").write_text("hello")

    folder = video.scan_video_folder(str(root), num_frames=4, stride=2)
    assert folder.class_names == ["jump", "wave"]
    assert len(folder.files) == 6 and list(folder.labels) == [0, 0, 0, 1, 1, 1]
    skipped = folder.skipped
    assert skipped["unreadable"]["count"] == 2
    assert {os.path.basename(s["path"]) for s in skipped["unreadable"]["files"]} == {"empty.mp4", "notes.MP4"}
    assert skipped["too_short"] == {"count": 1, "files": [{"path": str(root / "wave" / "short.gif"), "frames": 3, "needed": 7}]}
    assert skipped["not_video"] == {"count": 1, "files": [str(root / "wave" / "readme.txt")]}
    with pytest.raises(UserError, match="2 unreadable and 1 too-short"):
        video.scan_video_folder(str(root), num_frames=4, stride=2, skip_bad_files=False)


def test_folder_errors_name_the_folder(tmp_path, backgrounds):
    with pytest.raises(UserError, match="0 class folder"):
        video.scan_video_folder(str(tmp_path), 4, 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    video.write_video(str(tmp_path / "a" / "clip.mp4"), action_clip(backgrounds))
    with pytest.raises(UserError, match=r"'.*b' is empty"):
        video.scan_video_folder(str(tmp_path), 4, 1)
    (tmp_path / "b" / "broken.avi").write_bytes(b"RIFF")
    with pytest.raises(UserError, match=r"'.*b' has no usable video"):
        video.scan_video_folder(str(tmp_path), 4, 1)


def test_synthetic_folder_to_tf_data_batches(tmp_path, backgrounds):
    summary = video.write_synthetic_actions(str(tmp_path), backgrounds, clips_per_class=3, num_frames=8, size=SIZE, seed=1,
                                            actions=("left", "right", "grow", "shrink"))
    assert summary["clips"] == 12
    assert summary["per_class"] == {"left": 3, "right": 3, "grow": 3, "shrink": 3}
    assert summary["per_format"] == {"mp4": 4, "avi": 4, "gif": 4}

    folder = video.scan_video_folder(str(tmp_path), num_frames=4, stride=2)
    assert len(folder.files) == 12 and all(s["count"] == 0 for s in folder.skipped.values())
    ordered = video.video_file_dataset(folder.files, folder.labels, 4, 2, 32, batch_size=5, training=False, seed=0)
    clips, labels = next(iter(ordered))
    assert clips.shape == (5, 4, 32, 32, 3) and clips.dtype == tf.float32 and labels.dtype == tf.int64
    np.testing.assert_allclose(clips[0], video.read_video(folder.files[0], 4, 2, 32), atol=1e-6)

    shuffled = video.video_file_dataset(folder.files, folder.labels, 4, 2, 32, batch_size=5, training=True, seed=0)
    epoch = np.concatenate([y for _, y in shuffled.as_numpy_iterator()])
    assert sorted(epoch) == sorted(folder.labels) and list(epoch) != list(folder.labels)


def test_array_dataset_batches_float_clips(backgrounds):
    clips, labels, names = video.synthetic_action_clips(backgrounds, 2, num_frames=6, size=16, seed=0)
    assert clips.shape == (12, 6, 16, 16, 3) and clips.dtype == np.uint8 and names == list(video.ACTIONS)
    batches = list(video.video_array_dataset(clips, labels, batch_size=4, training=True, seed=0))
    assert len(batches) == 3 and batches[0][0].shape == (4, 6, 16, 16, 3) and batches[0][0].dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(batches[0][0])) and float(tf.reduce_max(batches[0][0])) <= 1.0


@pytest.mark.parametrize("forward, backward", [("left", "right"), ("up", "down"), ("grow", "shrink")])
def test_paired_classes_are_time_reverses(backgrounds, forward, backward):
    for seed in range(4):
        np.testing.assert_array_equal(action_clip(backgrounds, backward, seed), action_clip(backgrounds, forward, seed)[::-1])


@pytest.mark.parametrize("action", video.ACTIONS)
def test_motion_goes_the_named_way_and_shapes_stay_inside(action):
    size = 40
    for seed in range(20):
        params = video.sample_action_params(action, np.random.default_rng(seed), 8, size, 1)
        x, y, r = params["centres"][:, 0], params["centres"][:, 1], params["radii"]
        change = {"left": -np.diff(x), "right": np.diff(x), "up": -np.diff(y), "down": np.diff(y),
                  "grow": np.diff(r), "shrink": -np.diff(r)}[action]
        assert np.all(change > 0)
        assert np.all(np.minimum(x, y) - r >= 0) and np.all(np.maximum(x, y) + r <= size)


def test_frames_carry_no_class_only_the_motion_does():
    """Paired classes' mean (over clips) of each clip's mean frame differ only by sampling noise:
    the RMS difference over within-class spread is ~sqrt(2 / n) (0.13 here; measured 0.10-0.16 over
    seeds). The motion (last frame minus first) tells them apart (measured 0.47-1.0)."""
    backgrounds = textured_backgrounds(6, seed=3, height=24, width=32)
    per_class = 120
    clips, labels, names = video.synthetic_action_clips(backgrounds, per_class, num_frames=6, size=16, seed=0)
    clips = clips.astype(np.float64)
    noise = np.sqrt(2 / per_class)

    def difference_over_spread(statistic, a, b):
        sa, sb = statistic[labels == names.index(a)], statistic[labels == names.index(b)]
        spread = np.sqrt(np.mean((sa.var(axis=0, ddof=1) + sb.var(axis=0, ddof=1)) / 2))
        return np.sqrt(np.mean((sa.mean(axis=0) - sb.mean(axis=0)) ** 2)) / spread

    for a, b in [("left", "right"), ("up", "down"), ("grow", "shrink")]:
        assert difference_over_spread(clips.mean(axis=1), a, b) < 1.5 * noise
        assert difference_over_spread(clips[:, -1] - clips[:, 0], a, b) > 3 * noise


def test_write_video_refuses_odd_mp4_and_unknown_extensions(tmp_path):
    with pytest.raises(UserError, match="even width and height"):
        video.write_video(str(tmp_path / "odd.mp4"), np.zeros((2, 15, 16, 3), np.uint8))
    with pytest.raises(UserError, match="extension"):
        video.write_video(str(tmp_path / "clip.mkv"), np.zeros((2, 16, 16, 3), np.uint8))


def test_ucf101_from_tfds_mock_gives_clip_batches():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):  # random videos of 5 to 49 frames at 256x256
        ds, class_names = video.ucf101_dataset("train", num_frames=4, stride=1, size=24, batch_size=2, training=True, seed=0)
        clips, labels = next(iter(ds))
        assert clips.shape == (2, 4, 24, 24, 3) and clips.dtype == tf.float32 and labels.dtype == tf.int64
        assert len(class_names) == 101
        too_long, _ = video.ucf101_dataset("test", num_frames=60, stride=1, size=24, batch_size=2, training=False, seed=0)
        with pytest.raises(tf.errors.InvalidArgumentError, match="shorter than a clip"):
            next(iter(too_long))


def test_synthetic_actions_on_real_photos(tmp_path, assets_dir):
    folder = os.path.join(assets_dir, "data", "bsds500", "images")
    photos = [read_image_file(os.path.join(folder, name)) for name in sorted(os.listdir(folder))[:4]]
    summary = video.write_synthetic_actions(str(tmp_path), photos, clips_per_class=1, num_frames=6, size=64, seed=0)
    assert summary["clips"] == 6
    scanned = video.scan_video_folder(str(tmp_path), num_frames=6, stride=1)
    assert len(scanned.files) == 6 and scanned.skipped["too_short"]["count"] == 0
