"""Audio datasets: WAV files (a folder of class folders, or a metadata CSV) to tf.data pipelines.

Clips are decoded by `tf.audio.decode_wav` (16-bit PCM only), mixed down to mono and resampled
to 16 kHz with core TF ops, so every step runs inside tf.data. A dataset is checked once: every
file is decoded in a parallel tf.data pass, and files that fail (empty, not WAV, 8/24/32-bit,
truncated) are counted, named with a reason and skipped, or stop the run when `skip_bad_files`
is off. Multi-channel files are kept, mixed down, and listed in `mixed_down`.
"""

import csv
import dataclasses
import math
import os
import re
import wave

import numpy as np
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data.folders import list_class_folder

AUTOTUNE = tf.data.AUTOTUNE
SAMPLE_RATE = 16000
LABEL_COLUMNS = ("category", "label")
# Resampler: Kaiser-windowed sinc, 32 zero crossings a side, cutoff at 94.5% of the lower Nyquist,
# beta 12 (~117 dB stop band). Measured: <1e-6 max error on 440 Hz / 3 kHz sines (benchmarks/audio_resampler.py).
ZERO_CROSSINGS = 32
ROLLOFF = 0.945
KAISER_BETA = 12.0
MAX_FILTER_ENTRIES = 2**22  # 16 MB of float32 filter table; standard rates need at most ~0.6 M
# ESC-50 names are {fold}-{clip_id}-{take}-{target}.wav: takes of one clip_id are cut from one recording.
ESC50_NAME = re.compile(r"^\d+-(\d+)-[A-Za-z]+-\d+\.wav$", re.IGNORECASE)
# Speech Commands names are {speaker}_nohash_{n}.wav: one speaker's utterances belong together.
SPEECH_COMMANDS_NAME = re.compile(r"^([^_/]+)_nohash_\d+\.wav$", re.IGNORECASE)


@dataclasses.dataclass
class AudioFiles:
    files: list  # paths of the readable clips
    labels: np.ndarray  # int class index per file
    class_names: list
    folds: np.ndarray  # int fold per file, or None where the source has no folds
    groups: np.ndarray  # source-recording id per file (str): keep a group inside one split
    skipped: list  # [{"path": ..., "reason": ...}] files that could not be decoded
    mixed_down: list  # paths of the multi-channel files (kept, averaged to mono)


def read_wav(path):
    """A 16-bit PCM WAV file -> (float32 waveform [samples] in [-1, 1], mean over channels; int32 sample rate).

    Given a file name as a Python string (eager use, e.g. predicting one file), a missing, empty,
    non-16-bit or zero-length file is a UserError naming it and what is wrong.
    """
    if isinstance(path, (str, os.PathLike)) and tf.executing_eagerly():
        return _read_wav_file(os.fspath(path))
    audio, sample_rate = tf.audio.decode_wav(tf.io.read_file(path))
    return tf.reduce_mean(audio, axis=1), sample_rate


def _read_wav_file(path):
    if not os.path.isfile(path):
        raise UserError(f"Audio file {path!r} does not exist.")
    try:
        audio, sample_rate = tf.audio.decode_wav(tf.io.read_file(path))
    except tf.errors.OpError:
        raise UserError(f"{path!r} cannot be read as 16-bit PCM WAV audio: {_wav_error(path)}.") from None
    if audio.shape[0] == 0:
        raise UserError(f"{path!r} holds no audio samples (a zero-length WAV).")
    return tf.reduce_mean(audio, axis=1), sample_rate


def resample(waveform, from_rate, to_rate=SAMPLE_RATE):
    """Band-limited resampling of a float waveform [samples], with core TF ops (runs inside tf.data).

    Method: exact rational polyphase filtering. With g = gcd(from_rate, to_rate), up = to_rate / g
    and down = from_rate / g, output sample n sits at input time n * down / up and is the sum of the
    input samples within 32 zero crossings, weighted by a Kaiser-windowed sinc (beta 12) whose
    cutoff is 94.5% of the lower Nyquist frequency: the pass band is flat to ~1e-6 up to ~83% of it
    (6.6 kHz at 16 kHz), the stop band starts at ~106% of it. The `up` phases form one filter table,
    applied as a stride-1 conv1d over the input cut into blocks of `down` samples.

    Length: ceil(samples * to_rate / from_rate). Edges: the input is taken as zero outside the clip,
    so the first and last `edge_samples(from_rate, to_rate)` outputs (34 when downsampling, 68 for
    8 -> 16 kHz) see that silence and are not band-limited reconstructions of the signal.
    Rates whose ratio has a very large `up` (e.g. 44101 -> 16000) would need a huge filter table
    and raise InvalidArgumentError: convert such files to a standard rate first.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    from_rate, to_rate = tf.cast(from_rate, tf.int64), tf.cast(to_rate, tf.int64)
    common = _gcd(from_rate, to_rate)
    up, down = to_rate // common, from_rate // common
    num_samples = tf.size(waveform, out_type=tf.int64)
    num_out = (num_samples * up + down - 1) // down
    ratio = tf.cast(up, tf.float64) / tf.cast(down, tf.float64)
    cutoff = ROLLOFF * tf.minimum(ratio, 1.0)  # as a fraction of the input Nyquist frequency
    half_width = ZERO_CROSSINGS / cutoff  # in input samples
    left = tf.cast(tf.math.ceil(half_width), tf.int64)
    blocks_per_tap = (down + 2 * left + 1 + down - 1) // down  # the filter spans this many blocks of `down` samples
    tf.debugging.assert_less_equal(
        blocks_per_tap * down * up, tf.constant(MAX_FILTER_ENTRIES, tf.int64),
        message="resample: this pair of sample rates needs too large a filter table; use a standard rate",
    )
    # Row m, column r: the weight of padded input sample j * down + m for output j * up + r.
    rows = tf.cast(tf.range(blocks_per_tap * down), tf.float64)[:, None]
    phases = tf.cast(tf.range(up), tf.float64)[None, :] / ratio  # input time of output r, minus j * down
    table = _kaiser_sinc(phases + tf.cast(left, tf.float64) - rows, cutoff, half_width)
    table = tf.reshape(tf.cast(table, tf.float32), [blocks_per_tap, down, up])
    output_blocks = (num_out + up - 1) // up
    padded_length = (output_blocks + blocks_per_tap - 1) * down
    padded = tf.pad(waveform, [[left, padded_length - left - num_samples]])
    blocks = tf.reshape(padded, [1, -1, down])
    output = tf.nn.conv1d(blocks, table, stride=1, padding="VALID")  # [1, output_blocks, up]
    return tf.reshape(output, [-1])[:num_out]


def edge_samples(from_rate, to_rate=SAMPLE_RATE):
    """How many outputs at each end of `resample` reach past the clip (into the zero padding)."""
    return math.ceil(ZERO_CROSSINGS / ROLLOFF * max(1.0, to_rate / from_rate))


def _gcd(a, b):
    # TF has no gcd op; Euclid in a while_loop keeps the sample rates usable as tensors in tf.data.
    return tf.while_loop(lambda a, b: b > 0, lambda a, b: (b, a % b), (a, b))[0]


def _kaiser_sinc(offset, cutoff, half_width):
    """Low-pass impulse response at `offset` input samples: cutoff * sinc(cutoff * offset) * Kaiser window."""
    x = np.pi * cutoff * offset
    safe_x = tf.where(x == 0, tf.ones_like(x), x)
    sinc = tf.where(x == 0, tf.ones_like(x), tf.sin(safe_x) / safe_x)
    inside = tf.abs(offset) <= half_width
    radius = tf.sqrt(tf.maximum(1.0 - tf.square(offset / half_width), 0.0))
    beta = tf.constant(KAISER_BETA, tf.float64)
    kaiser = tf.math.special.bessel_i0(beta * radius) / tf.math.special.bessel_i0(beta)
    window = tf.where(inside, kaiser, tf.zeros_like(offset))
    return cutoff * sinc * window


def load_clip(path, sample_rate=SAMPLE_RATE):
    """A WAV file -> mono float32 waveform [samples] at `sample_rate` (resampled only where the rate differs)."""
    waveform, rate = read_wav(path)
    return tf.cond(tf.equal(rate, sample_rate), lambda: waveform, lambda: resample(waveform, rate, sample_rate))


def clip_dataset(files, labels, sample_rate=SAMPLE_RATE):
    """Unbatched (waveform float32 [samples], label) pairs, decoded in parallel; clips keep their own lengths."""
    pairs = tf.data.Dataset.from_tensor_slices((list(files), np.asarray(labels, dtype=np.int64)))
    return pairs.map(lambda path, label: (load_clip(path, sample_rate), label), num_parallel_calls=AUTOTUNE)


def scan_audio_folder(root, skip_bad_files=True):
    """Lists `root/<class>/<clip>`; checks every clip decodes. See module doc for bad files."""
    files, labels, class_names = list_class_folder(root, "audio clip")
    groups = [source_recording(os.path.relpath(path, root)) for path in files]
    return _checked(files, labels, class_names, None, groups, root, skip_bad_files)


def read_audio_metadata(csv_path, audio_dir, skip_bad_files=True):
    """A CSV (filename, category or label, optional fold) of clips under `audio_dir`. See module doc for bad files."""
    if not os.path.isfile(csv_path):
        raise UserError(f"Metadata file {csv_path!r} does not exist.")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
    if "filename" not in columns or label_column is None:
        missing = "filename" if "filename" not in columns else " or ".join(LABEL_COLUMNS)
        raise UserError(f"Metadata file {csv_path!r} has no column {missing} (its columns: {columns}).")
    class_names = sorted({row[label_column] for row in rows})
    _require_two_classes(class_names, f"Metadata file {csv_path!r} names {len(class_names)} class(es) {class_names}")
    files = [os.path.join(audio_dir, row["filename"]) for row in rows]
    absent = [path for path in files if not os.path.isfile(path)]
    if absent:
        raise UserError(
            f"Metadata file {csv_path!r} names {len(absent)} file(s) missing from {audio_dir!r}: {absent[:5]}."
        )
    index = {name: i for i, name in enumerate(class_names)}
    labels = [index[row[label_column]] for row in rows]
    folds = [_fold(row["fold"], csv_path) for row in rows] if "fold" in columns else None
    groups = [source_recording(row["filename"]) for row in rows]
    return _checked(files, labels, class_names, folds, groups, csv_path, skip_bad_files)


def source_recording(relative_path):
    """The recording a clip was cut from: ESC-50 clip_id, Speech Commands speaker, else the path without extension."""
    name = os.path.basename(relative_path)
    match = ESC50_NAME.match(name) or SPEECH_COMMANDS_NAME.match(name)
    return match.group(1) if match else os.path.splitext(relative_path)[0]


def _require_two_classes(class_names, description):
    if len(class_names) < 2:
        raise UserError(f"{description}; a classifier needs at least two classes.")


def _fold(value, csv_path):
    try:
        return int(value)
    except ValueError:
        raise UserError(f"Metadata file {csv_path!r} has fold {value!r}; folds must be whole numbers.") from None


def _checked(files, labels, class_names, folds, groups, source, skip_bad_files):
    """The AudioFiles of the clips that decode; bad ones reported (or a UserError when not skipping)."""
    bad, mixed_down = _check_wavs(files)
    skipped = [{"path": files[i], "reason": reason} for i, reason in sorted(bad.items())]
    if skipped and not skip_bad_files:
        listing = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        raise UserError(
            f"{len(skipped)} file(s) in {source!r} cannot be read as 16-bit PCM WAV audio ({listing}). Remove or "
            "convert them, or set data.skip_bad_files=true to skip and report them."
        )
    keep = [i for i in range(len(files)) if i not in bad]
    labels = np.asarray(labels, dtype=int)[keep]
    for label, name in enumerate(class_names):
        if not np.any(labels == label):
            raise UserError(f"Class {name!r} in {source!r} has no readable audio file.")
    return AudioFiles(
        files=[files[i] for i in keep],
        labels=labels,
        class_names=class_names,
        folds=None if folds is None else np.asarray(folds, dtype=int)[keep],
        groups=np.asarray(groups, dtype=str)[keep],
        skipped=skipped,
        mixed_down=[files[i] for i in keep if i in mixed_down],
    )


def _check_wavs(files):
    """One parallel decode pass -> ({index: reason} of files that fail or hold no samples, {multi-channel index})."""
    indexed = tf.data.Dataset.from_tensor_slices((np.arange(len(files)), list(files)))
    shapes = indexed.map(
        lambda i, path: (i, tf.shape(tf.audio.decode_wav(tf.io.read_file(path)).audio)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    decoded = {int(i): (int(samples), int(channels)) for i, (samples, channels) in shapes.as_numpy_iterator()}
    bad = {i: _wav_error(path) for i, path in enumerate(files) if i not in decoded}
    bad.update({i: "no audio samples (a zero-length WAV)" for i, (samples, _) in decoded.items() if samples == 0})
    return bad, {i for i, (_, channels) in decoded.items() if channels > 1}


def _wav_error(path):
    """Why `path` does not decode, in words a person can act on."""
    with open(path, "rb") as f:
        header = f.read(12)
    if not header:
        return "empty file (0 bytes)"
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return "not a WAV file (no RIFF/WAVE header)"
    bits = _pcm_bits(path)
    if bits not in (None, 16):
        return f"{bits}-bit PCM: tf.audio.decode_wav reads 16-bit PCM only; convert it to 16-bit"
    return f"unreadable WAV: {_decode_message(path)}"


def _pcm_bits(path):
    # decode_wav's error gives the bit depth only as a bare number; the stdlib header reader names it.
    try:
        with wave.open(path) as f:
            return 8 * f.getsampwidth()
    except (wave.Error, EOFError):
        return None


def _decode_message(path):
    try:
        tf.audio.decode_wav(tf.io.read_file(path))
    except tf.errors.OpError as error:
        return re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", error.message.splitlines()[0])  # drop TF's op decorations
    return "unknown decode error"


def write_synthetic_clips(root, class_names=("low_tone", "high_tone", "chirp"), per_class=8, seconds=2.0, seed=0):
    """Writes a small, learnable sound dataset as 16 kHz 16-bit WAVs in class folders (for --smoke runs).

    Each class is a different signal (a 300 Hz tone, a 2 kHz tone, a rising chirp) at a random level
    and start, over noise.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    signals = {
        "low_tone": lambda: np.sin(2 * np.pi * 300 * t),
        "high_tone": lambda: np.sin(2 * np.pi * 2000 * t),
        "chirp": lambda: np.sin(2 * np.pi * (200 + 1500 * t / seconds) * t),
    }
    for name in class_names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            onset = rng.uniform(0, 0.3)
            clip = rng.uniform(0.2, 0.6) * signals[name]() * (t > onset) + rng.normal(0, 0.02, t.shape)
            wav = tf.audio.encode_wav(np.clip(clip, -1, 1).astype("float32")[:, None], SAMPLE_RATE)
            tf.io.write_file(os.path.join(root, name, f"{name}_{i:02d}.wav"), wav)
    return root
