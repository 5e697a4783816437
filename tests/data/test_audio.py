import csv
import os
import wave

import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import audio, splits

PCM16_STEP = 1 / 32768
# Largest error measured by benchmarks/audio_resampler.py away from the edges: 8.3e-7; asserted with headroom.
RESAMPLER_BOUND = 2e-6


def _sine(frequency, rate, seconds=1.0):
    return np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)


def _write_pcm16(path, samples, rate=16000):
    """float samples [n] or [n, channels] -> 16-bit WAV, written by TensorFlow."""
    samples = np.asarray(samples, np.float32)
    tf.io.write_file(str(path), tf.audio.encode_wav(samples.reshape(len(samples), -1), rate))


def _write_with_wave(path, frames, sample_width, channels=1, rate=16000):
    """Raw little-endian PCM frames -> WAV of any bit depth, with Python's wave module."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(sample_width)
        f.setframerate(rate)
        f.writeframes(frames)


def test_read_wav_round_trips_16bit_values_shape_and_rate(tmp_path):
    samples = np.random.default_rng(0).uniform(-1, 1, 1000)
    _write_pcm16(tmp_path / "a.wav", samples, rate=22050)
    waveform, rate = audio.read_wav(str(tmp_path / "a.wav"))
    assert waveform.shape == (1000,) and waveform.dtype == tf.float32 and int(rate) == 22050
    assert np.abs(waveform.numpy() - samples).max() <= 1.5 * PCM16_STEP  # encode scales by 32767 and rounds


def test_stereo_is_mixed_down_to_the_channel_mean(tmp_path):
    frames = np.array([[1000, -3000], [32767, 32767], [-32768, 0]], np.int16)
    _write_with_wave(tmp_path / "stereo.wav", frames.tobytes(), sample_width=2, channels=2)
    waveform, _ = audio.read_wav(str(tmp_path / "stereo.wav"))
    assert waveform.numpy().tolist() == [-1000 / 32768, 32767 / 32768, -0.5]


@pytest.mark.parametrize("from_rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("frequency", [440, 3000])
def test_resampler_matches_the_analytic_sine(from_rate, frequency):
    resampled = audio.resample(_sine(frequency, from_rate).astype(np.float32), from_rate, 16000).numpy()
    assert resampled.shape == (16000,)
    error = np.abs(resampled - _sine(frequency, 16000))
    edge = audio.edge_samples(from_rate, 16000)
    assert error[edge:-edge].max() <= RESAMPLER_BOUND
    assert error[:edge].max() > 1e-3 and error[-edge:].max() > 1e-3  # the documented edges do see the zero padding


def test_resampler_output_length_is_the_ceiling():
    assert audio.resample(np.ones(3, np.float32), 44100, 16000).shape == (2,)  # ceil(3 * 160 / 441)
    assert audio.resample(np.ones(4410, np.float32), 44100, 16000).shape == (1600,)
    assert audio.resample(np.ones(1001, np.float32), 8000, 16000).shape == (2002,)
    assert audio.resample(np.zeros(0, np.float32), 48000, 16000).shape == (0,)


def test_load_clip_resamples_only_when_the_rate_differs(tmp_path):
    _write_pcm16(tmp_path / "16k.wav", 0.5 * _sine(440, 16000, 0.5))
    _write_pcm16(tmp_path / "44k.wav", 0.5 * _sine(440, 44100, 0.5), rate=44100)
    same = audio.load_clip(str(tmp_path / "16k.wav"))
    assert np.array_equal(same.numpy(), audio.read_wav(str(tmp_path / "16k.wav"))[0].numpy())
    resampled = audio.load_clip(str(tmp_path / "44k.wav")).numpy()
    assert resampled.shape == (8000,)
    edge = audio.edge_samples(44100)
    assert np.abs(resampled - 0.5 * _sine(440, 16000, 0.5))[edge:-edge].max() <= 2 * PCM16_STEP


@pytest.fixture
def folder(tmp_path):
    """Two classes of good clips (one stereo, one at 8 kHz) and one file of each bad kind."""
    root = tmp_path / "sounds"
    for name in ("bark", "meow"):
        os.makedirs(root / name)
        for i in range(3):
            _write_pcm16(root / name / f"{i}.wav", 0.1 * (i + 1) * _sine(300, 16000, 0.1))
    _write_pcm16(root / "bark" / "slow.wav", 0.2 * _sine(300, 8000, 0.1), rate=8000)
    _write_with_wave(root / "meow" / "stereo.wav", np.full((1600, 2), 1000, np.int16).tobytes(), 2, channels=2)
    _write_with_wave(root / "bark" / "eight_bit.wav", bytes([128] * 160), sample_width=1)
    _write_with_wave(root / "bark" / "twenty_four_bit.wav", bytes(3 * 160), sample_width=3)
    _write_with_wave(root / "meow" / "zero_length.wav", b"", sample_width=2)
    (root / "meow" / "empty.wav").write_bytes(b"")
    (root / "meow" / "notes.wav").write_text("this is text, not audio")
    (root / "bark" / "truncated.wav").write_bytes((root / "bark" / "0.wav").read_bytes()[:60])
    return root


BAD_REASONS = {
    "eight_bit.wav": "8-bit PCM: tf.audio.decode_wav reads 16-bit PCM only",
    "twenty_four_bit.wav": "24-bit PCM: tf.audio.decode_wav reads 16-bit PCM only",
    "zero_length.wav": "zero-length",
    "empty.wav": "empty file (0 bytes)",
    "notes.wav": "not a WAV file",
    "truncated.wav": "unreadable WAV: Data too short",
}


def test_scan_keeps_good_clips_and_names_each_bad_file_with_its_reason(folder):
    scanned = audio.scan_audio_folder(str(folder))
    assert scanned.class_names == ["bark", "meow"]
    assert [os.path.relpath(f, folder) for f in scanned.files] == [
        "bark/0.wav", "bark/1.wav", "bark/2.wav", "bark/slow.wav", "meow/0.wav", "meow/1.wav", "meow/2.wav",
        "meow/stereo.wav",
    ]
    assert scanned.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and scanned.folds is None
    assert scanned.groups.tolist() == [os.path.splitext(os.path.relpath(f, folder))[0] for f in scanned.files]
    assert [os.path.basename(f) for f in scanned.mixed_down] == ["stereo.wav"]
    reasons = {os.path.basename(s["path"]): s["reason"] for s in scanned.skipped}
    assert sorted(reasons) == sorted(BAD_REASONS)
    for name, expected in BAD_REASONS.items():
        assert expected in reasons[name], (name, reasons[name])


def test_strict_mode_raises_naming_the_bad_files(folder):
    with pytest.raises(UserError, match=r"6 file\(s\).*16-bit PCM.*skip_bad_files"):
        audio.scan_audio_folder(str(folder), skip_bad_files=False)


def test_folder_errors_name_the_folder(folder, tmp_path):
    os.makedirs(folder / "tweet")
    with pytest.raises(UserError, match="tweet.*empty"):
        audio.scan_audio_folder(str(folder))
    single = tmp_path / "single"
    os.makedirs(single / "only")
    _write_pcm16(single / "only" / "a.wav", np.zeros(10))
    with pytest.raises(UserError, match="1 class folder.*at least two"):
        audio.scan_audio_folder(str(single))
    with pytest.raises(UserError, match="not a folder"):
        audio.scan_audio_folder(str(tmp_path / "missing"))
    unreadable = tmp_path / "unreadable"
    os.makedirs(unreadable / "a")
    os.makedirs(unreadable / "b")
    _write_pcm16(unreadable / "a" / "ok.wav", np.zeros(10))
    (unreadable / "b" / "bad.wav").write_text("text")
    with pytest.raises(UserError, match="Class 'b'.*no readable audio"):
        audio.scan_audio_folder(str(unreadable))


def test_source_recording_of_esc50_speech_commands_and_other_names():
    assert audio.source_recording("1-100038-A-14.wav") == "100038"
    assert audio.source_recording("dog/5-9032-B-0.wav") == "9032"
    assert audio.source_recording("yes/0a7c2a8d_nohash_1.wav") == "0a7c2a8d"
    assert audio.source_recording("bark/0.wav") == "bark/0"


def _write_metadata(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)


def test_metadata_csv_with_folds_labels_and_groups(tmp_path):
    clips = tmp_path / "clips"
    os.makedirs(clips)
    rows = [["1-100-A-0.wav", 1, "dog"], ["1-100-B-0.wav", 1, "dog"], ["2-200-A-5.wav", 2, "cat"],
            ["3-300-A-0.wav", 3, "dog"], ["3-400-A-5.wav", 3, "cat"], ["2-500-A-5.wav", 2, "cat"]]
    for name, _, _ in rows:
        _write_pcm16(clips / name, np.zeros(100))
    (clips / "2-500-A-5.wav").write_bytes(b"")
    _write_metadata(tmp_path / "meta.csv", ["filename", "fold", "category"], rows)
    read = audio.read_audio_metadata(str(tmp_path / "meta.csv"), str(clips))
    assert read.class_names == ["cat", "dog"]
    assert read.labels.tolist() == [1, 1, 0, 1, 0] and read.folds.tolist() == [1, 1, 2, 3, 3]
    assert read.groups.tolist() == ["100", "100", "200", "300", "400"]
    assert [s["path"] for s in read.skipped] == [str(clips / "2-500-A-5.wav")]
    _write_metadata(tmp_path / "plain.csv", ["filename", "label"], [[r[0], r[2]] for r in rows[:5]])
    plain = audio.read_audio_metadata(str(tmp_path / "plain.csv"), str(clips))
    assert plain.folds is None and plain.labels.tolist() == [1, 1, 0, 1, 0] and plain.skipped == []


def test_metadata_errors_name_the_column_or_file(tmp_path):
    _write_pcm16(tmp_path / "a.wav", np.zeros(10))
    _write_metadata(tmp_path / "no_label.csv", ["filename", "fold"], [["a.wav", 1]])
    with pytest.raises(UserError, match="no_label.csv.*no column category or label"):
        audio.read_audio_metadata(str(tmp_path / "no_label.csv"), str(tmp_path))
    _write_metadata(tmp_path / "no_file.csv", ["file", "label"], [["a.wav", "x"]])
    with pytest.raises(UserError, match="no column filename"):
        audio.read_audio_metadata(str(tmp_path / "no_file.csv"), str(tmp_path))
    _write_metadata(tmp_path / "missing.csv", ["filename", "label"], [["a.wav", "x"], ["gone.wav", "y"]])
    with pytest.raises(UserError, match="1 file.*gone.wav"):
        audio.read_audio_metadata(str(tmp_path / "missing.csv"), str(tmp_path))
    _write_metadata(tmp_path / "one_class.csv", ["filename", "label"], [["a.wav", "x"]])
    with pytest.raises(UserError, match="1 class.*at least two"):
        audio.read_audio_metadata(str(tmp_path / "one_class.csv"), str(tmp_path))
    bad_fold = [["a.wav", "one", "x"], ["a.wav", 2, "y"]]
    _write_metadata(tmp_path / "bad_fold.csv", ["filename", "fold", "label"], bad_fold)
    with pytest.raises(UserError, match="fold 'one'"):
        audio.read_audio_metadata(str(tmp_path / "bad_fold.csv"), str(tmp_path))


def test_clip_dataset_yields_16k_mono_clips_of_their_own_lengths(folder):
    scanned = audio.scan_audio_folder(str(folder))
    dataset = audio.clip_dataset(scanned.files, scanned.labels)
    assert dataset.element_spec[0].shape.as_list() == [None] and dataset.element_spec[0].dtype == tf.float32
    pairs = list(dataset.as_numpy_iterator())
    assert [len(w) for w, _ in pairs] == [1600] * 8  # 0.1 s each; slow.wav resampled from 8 kHz
    assert [int(label) for _, label in pairs] == scanned.labels.tolist()
    for (waveform, _), path in zip(pairs, scanned.files):
        np.testing.assert_array_equal(waveform, audio.load_clip(path).numpy())
    np.testing.assert_allclose(pairs[7][0], 1000 / 32768)  # stereo.wav, mixed down


def test_real_esc50_subset(assets_dir):
    root = os.path.join(assets_dir, "data", "esc50_16k")
    read = audio.read_audio_metadata(os.path.join(root, "esc10_plus_cat.csv"), os.path.join(root, "audio"))
    assert len(read.files) == 91 and len(read.class_names) == 11 and "cat" in read.class_names
    assert read.skipped == [] and read.mixed_down == []
    assert sorted(set(read.folds.tolist())) == [3, 4, 5]
    with open(os.path.join(root, "esc10_plus_cat.csv"), newline="") as f:
        assert read.groups.tolist() == [row["src_file"] for row in csv.DictReader(f)]  # clip_id = ESC-50's source file
    shapes = tf.data.Dataset.from_tensor_slices(read.files).map(
        lambda path: tuple(audio.read_wav(path)), num_parallel_calls=tf.data.AUTOTUNE
    )
    assert {(len(waveform), int(rate)) for waveform, rate in shapes.as_numpy_iterator()} == {(80000, 16000)}  # 5 s
    split = splits.grouped_stratified_split(read.labels, read.groups, 0.2, 0.2, seed=0)
    assert not set(read.groups[split["train"]]) & set(read.groups[split["test"]])
