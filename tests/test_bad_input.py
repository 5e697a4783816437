"""The bad-input corpus (issue 7): every broken or odd input gets a clear error or a counted skip.

Every file is written here, at test time (PIL, numpy, wave, PyAV): no binary file is committed.
Readers: a bad file is a UserError naming it (single-file readers) or a skip counted with its
reason (folder scans). CLI: bad input exits with status 2 and a one-paragraph message, no traceback.
"""

import functools
import io
import os
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfcourse import UserError, cli, explain, export, hub
from tfcourse.data import audio, images, video
from tests.data.test_audio import _write_with_wave as _write_wav

BOMB_SIDE = 20000

# ## Images


def _encoded(image, fmt, **options):
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt, **options)
    return buffer.getvalue()


def _rgb(height=16, width=16):
    """Top half red, bottom half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2] = (255, 0, 0)
    pixels[height // 2 :] = (0, 0, 255)
    return pixels


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=None)
def _png_bomb(side=BOMB_SIDE):
    """A valid, complete greyscale PNG of side x side black pixels: 0.4 MB on disk, 400 MB decoded."""
    compressor, row = zlib.compressobj(9), b"\0" * (side + 1)  # filter byte + one byte per pixel
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _patched(data, offset, fmt, *values):
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt) :]


def _jpeg_bomb():
    jpeg = _encoded(_rgb(), "JPEG")
    sof = jpeg.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    return _patched(jpeg, sof + 5, ">HH", BOMB_SIDE, BOMB_SIDE)


BOMBS = {
    "bomb.png": lambda: _png_bomb(),
    "bomb.jpg": _jpeg_bomb,
    "bomb.gif": lambda: _patched(_encoded(_rgb(), "GIF"), 6, "<HH", BOMB_SIDE, BOMB_SIDE),
    "bomb.bmp": lambda: _patched(_encoded(_rgb(), "BMP"), 18, "<ii", BOMB_SIDE, BOMB_SIDE),
    # WebP sides stop at 16384: 16384 x 16384 is 268 M pixels, over the limit too.
    "bomb.webp": lambda: _patched(_encoded(_rgb(), "WEBP", lossless=True), 21, "<I", (16383 << 14) | 16383),
}


@pytest.mark.parametrize("name, options, size", [
    ("a.png", {}, (23, 37)), ("a.jpg", {}, (23, 37)), ("a.gif", {}, (23, 37)), ("a.bmp", {}, (23, 37)),
    ("lossy.webp", {"quality": 90}, (23, 37)), ("lossless.webp", {"lossless": True}, (23, 37)),
    ("exif.webp", {"exif": b"Exif\0\0" + b"\0" * 20}, (23, 37)),  # extended (VP8X) header
])
def test_header_size_is_the_decoded_size(name, options, size):
    extension = name.rsplit(".", 1)[1]
    contents = _encoded(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8),
                        {"jpg": "JPEG"}.get(extension, extension.upper()), **options)
    assert tuple(int(v) for v in images.encoded_image_size(contents)) == size
    assert images.decode_unresized(contents).shape == (*size, 3)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bomb_is_refused_from_its_header(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(BOMBS[name]())
    with pytest.raises(UserError, match=r"(20000x20000 = 400,000,000|16384x16384 = 268,435,456) pixels, over the "
                                        r"limit of 89,478,485 pixels.*refused before decoding") as error:
        images.read_image_file(str(path), 224)
    assert str(path) in str(error.value)
    # In a graph (tf.data) the same check stops the decode: an assertion, not an allocation.
    with pytest.raises(tf.errors.InvalidArgumentError, match="refused before decoding"):
        tf.function(images.decode_unresized)(tf.io.read_file(str(path)))


def test_a_header_just_under_the_limit_passes_the_check():
    png = _patched(_png_bomb(4), 16, ">II", 9000, 9000)  # 81 M pixels: not decoded here, only checked
    assert images.size_problem(png) is None


ODD_VALID = {
    # name: (encoded bytes, expected RGB of the top and bottom halves, tolerance)
    "cmyk.jpg": (lambda: _encoded(Image.fromarray(_rgb()).convert("CMYK"), "JPEG", quality=100),
                 ((255, 0, 0), (0, 0, 255)), 3),
    "sixteen_bit.png": (lambda: tf.io.encode_png(np.full((16, 16, 3), [65535, 32768, 1000], np.uint16)).numpy(),
                        ((255, 128, 3), (255, 128, 3)), 0),  # value // 256
    "grey.png": (lambda: _encoded(np.full((16, 16), 77, np.uint8), "PNG"), ((77, 77, 77), (77, 77, 77)), 0),
    "grey.jpg": (lambda: _encoded(np.full((16, 16), 77, np.uint8), "JPEG", quality=100), ((77, 77, 77), (77, 77, 77)), 1),
    "rgba.png": (lambda: _encoded(np.dstack([_rgb(), np.full((16, 16), 0, np.uint8)]), "PNG"),  # alpha dropped
                 ((255, 0, 0), (0, 0, 255)), 0),
    "palette.png": (lambda: _encoded(_rgb(), "PNG") and _palette_png(), ((255, 0, 0), (0, 0, 255)), 0),
    "png_named.jpg": (lambda: _encoded(_rgb(), "PNG"), ((255, 0, 0), (0, 0, 255)), 0),  # the content decides
}


def _palette_png():
    buffer = io.BytesIO()
    Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(ODD_VALID))
def test_valid_odd_images_decode_to_the_right_rgb_pixels(name, tmp_path):
    make, (top, bottom), tolerance = ODD_VALID[name]
    path = tmp_path / name
    path.write_bytes(make())
    image = images.read_image_file(str(path))
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert np.abs(image[:8].astype(int) - top).max() <= tolerance
    assert np.abs(image[8:].astype(int) - bottom).max() <= tolerance


BROKEN = {
    # name: (bytes, words of the reason)
    "truncated.jpg": (lambda: _encoded(_rgb(64, 64), "JPEG")[:300], "Invalid JPEG data"),
    "truncated.png": (lambda: _encoded(_rgb(), "PNG")[:41], "Invalid PNG data"),
    "zero_bytes.png": (lambda: b"", "empty file (0 bytes)"),
    "text_named.jpg": (lambda: b"these are notes, not a photo", "Unknown image file format"),
    "image.jxl": (lambda: b"\xff\x0a" + bytes(30), "JPEG XL: its size cannot be checked before decoding"),
    **{name: (make, "refused before decoding") for name, make in BOMBS.items()},
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_image_is_a_user_error_naming_the_file(name, tmp_path):
    make, words = BROKEN[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(UserError) as error:
        images.read_image_file(str(path), 32)
    message = str(error.value)
    assert str(path) in message and words in message and "{{" not in message and "[Op:" not in message


def test_scan_counts_every_broken_image_with_its_reason_and_keeps_the_odd_valid_ones(tmp_path):
    root = tmp_path / "leaves"
    for label, name in enumerate(("healthy", "rust")):
        os.makedirs(root / name)
        (root / name / "good.png").write_bytes(_encoded(_rgb(), "PNG"))
    for i, (name, (make, _, _)) in enumerate(sorted(ODD_VALID.items())):
        (root / ("healthy", "rust")[i % 2] / name).write_bytes(make())
    for i, (name, (make, _)) in enumerate(sorted(BROKEN.items())):
        (root / ("healthy", "rust")[i % 2] / name).write_bytes(make())
    scanned = images.scan_image_folder(str(root))
    reasons = {os.path.basename(s["path"]): s["reason"] for s in scanned.skipped}
    assert sorted(reasons) == sorted(BROKEN)
    for name, (_, words) in BROKEN.items():
        assert words in reasons[name], (name, reasons[name])
    assert len(scanned.files) == 2 + len(ODD_VALID)
    with pytest.raises(UserError, match=rf"{len(BROKEN)} file\(s\).*skip_bad_files"):
        images.scan_image_folder(str(root), skip_bad_files=False)
    # The kept files decode in the training pipeline too (the same checks run there, in tf.data).
    decoded = list(images.decoded_files(scanned.files, 32).as_numpy_iterator())
    assert len(decoded) == len(scanned.files) and all(d.shape == (32, 32, 3) for d in decoded)


# ## Audio


def _pcm16(samples):
    return np.round(np.asarray(samples) * 32767).astype("<i2").tobytes()


def _sine(frequency, rate, seconds=0.5):
    return np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)


BAD_WAVS = {
    "eight_bit.wav": (lambda p: _write_wav(p, bytes([128] * 800), 1), "8-bit PCM: tf.audio.decode_wav reads 16-bit"),
    "twenty_four_bit.wav": (lambda p: _write_wav(p, bytes(3 * 800), 3), "24-bit PCM: tf.audio.decode_wav reads 16-bit"),
    "zero_length.wav": (lambda p: _write_wav(p, b"", 2), "zero-length"),
    "zero_bytes.wav": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
}


@pytest.mark.parametrize("name", sorted(BAD_WAVS))
def test_unsupported_or_empty_wav_is_a_user_error_naming_the_file(name, tmp_path):
    make, words = BAD_WAVS[name]
    path = tmp_path / name
    make(path)
    with pytest.raises(UserError) as error:
        audio.load_clip(str(path))
    assert str(path) in str(error.value) and words in str(error.value)
    with pytest.raises(UserError, match="does not exist"):
        audio.load_clip(str(tmp_path / "missing.wav"))


def test_stereo_44k_is_mixed_down_and_resampled_and_bad_wavs_are_counted(tmp_path):
    root = tmp_path / "sounds"
    for name in ("bark", "meow"):
        os.makedirs(root / name)
        _write_wav(root / name / "mono16k.wav", _pcm16(0.5 * _sine(300, 16000)), 2)
    left, right = 0.6 * _sine(440, 44100), 0.2 * _sine(440, 44100)
    stereo = str(root / "meow" / "stereo44k.wav")
    _write_wav(stereo, _pcm16(np.stack([left, right], 1)), 2, channels=2, rate=44100)
    for i, (name, (make, _)) in enumerate(sorted(BAD_WAVS.items())):
        make(root / ("bark", "meow")[i % 2] / name)
    scanned = audio.scan_audio_folder(str(root))
    assert sorted(os.path.basename(f) for f in scanned.files) == ["mono16k.wav", "mono16k.wav", "stereo44k.wav"]
    assert scanned.mixed_down == [stereo]
    reasons = {os.path.basename(s["path"]): s["reason"] for s in scanned.skipped}
    assert sorted(reasons) == sorted(BAD_WAVS)
    for name, (_, words) in BAD_WAVS.items():
        assert words in reasons[name]
    # The channel mean (0.4 sin) at 16 kHz: ceil(22050 * 16000 / 44100) samples, exact away from the edges.
    clip = np.asarray(audio.load_clip(stereo))
    assert clip.shape == (8000,)
    edge = audio.edge_samples(44100)
    assert np.abs(clip - 0.4 * _sine(440, 16000))[edge:-edge].max() < 2 / 32768


# ## Video


def _write_empty_video(path):
    """A container with a video stream and no frames at all."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4" if str(path).endswith(".mp4") else "mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p" if str(path).endswith(".mp4") else "yuvj420p"
        container.start_encoding()  # writes the header: PyAV waits for a first frame otherwise
        container.mux(stream.encode())
    return str(path)


NO_FRAMES = {
    "empty.mp4": (_write_empty_video, "has no video stream"),  # FFmpeg lists no stream of an MP4 without samples
    "empty.avi": (_write_empty_video, "has a video stream but no decodable frames"),
    "sound_only.mp4": (lambda p: _write_wav(p, _pcm16(_sine(300, 16000)), 2), "has no video stream"),
    "zero_bytes.mp4": (lambda p: p.write_bytes(b""), "cannot be decoded"),
}


@pytest.mark.parametrize("name", sorted(NO_FRAMES))
def test_video_without_frames_is_a_user_error_naming_the_file(name, tmp_path):
    make, pattern = NO_FRAMES[name]
    path = tmp_path / name
    make(path)
    with pytest.raises(UserError, match=pattern) as error:
        video.read_video(str(path), num_frames=2, stride=1, size=16)
    assert str(path) in str(error.value)


def test_scan_counts_videos_without_frames(tmp_path):
    root = tmp_path / "clips"
    frames = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    for name in ("left", "right"):
        os.makedirs(root / name)
        video.write_video(str(root / name / "good.mp4"), frames)
    for i, (name, (make, _)) in enumerate(sorted(NO_FRAMES.items())):
        make(root / ("left", "right")[i % 2] / name)
    scanned = video.scan_video_folder(str(root), num_frames=2, stride=1)
    assert len(scanned.files) == 2
    unusable = scanned.skipped["unreadable"]["files"] + scanned.skipped["too_short"]["files"]
    assert sorted(os.path.basename(u["path"]) for u in unusable) == sorted(NO_FRAMES)
    assert scanned.skipped["unreadable"]["count"] + scanned.skipped["too_short"]["count"] == len(NO_FRAMES)


# ## Models: not a SavedModel, not a TFLite model, a .keras file with a Lambda layer


def _not_a_saved_model(path, pb=None):
    os.makedirs(path)
    if pb is not None:
        (path / "saved_model.pb").write_bytes(pb)
    return str(path)


@pytest.mark.parametrize("pb", [None, b"not a protocol buffer"])
def test_a_folder_that_is_not_a_saved_model_is_refused_as_a_hub_handle(pb, tmp_path):
    handle = _not_a_saved_model(tmp_path / "module", pb)
    with pytest.raises(UserError, match="saved_model.pb" if pb is None else "cannot be loaded as a SavedModel") as error:
        hub.load_module(handle)
    assert handle in str(error.value)


def _fake_run(path, saved_model_pb=None, tflite=b"not a flatbuffer", metrics=True):
    """A run directory whose export is broken: a SavedModel folder without (or with a garbage) saved_model.pb."""
    export_dir = path / "export"
    _not_a_saved_model(export_dir / "saved_model", saved_model_pb)
    (export_dir / "labels.txt").write_text("a\nb\n")
    (export_dir / "model_float32.tflite").write_bytes(tflite)
    if metrics:
        (export_dir / "export_metrics.json").write_text('{"image_size": 32}')
    return str(path)


@pytest.mark.parametrize("fmt, pb, metrics, words", [
    ("saved_model", None, True, "is not a SavedModel folder: it holds no saved_model.pb"),
    ("saved_model", b"garbage", True, "cannot be loaded as a SavedModel"),
    ("tflite", None, True, "cannot be loaded as a TFLite model"),
    ("tflite", None, False, "export_metrics.json' cannot be read"),
])
def test_a_broken_export_is_refused_naming_the_path(fmt, pb, metrics, words, tmp_path):
    run_dir = _fake_run(tmp_path / "run", pb, metrics=metrics)
    with pytest.raises(UserError, match=words) as error:
        export.load_exported(run_dir, fmt)
    assert run_dir in str(error.value)


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    path = str(tmp_path_factory.mktemp("models") / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    return path


def test_safe_mode_refuses_a_keras_file_with_a_lambda_layer(lambda_model, tmp_path):
    with pytest.raises(UserError, match="contains a Lambda layer.*arbitrary Python code.*safe mode refuses") as error:
        explain.load_keras_model(lambda_model)
    assert lambda_model in str(error.value) and "safe_mode=False" not in str(error.value)
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(UserError, match="is not a .keras file"):
        explain.load_keras_model(str(garbage))


# ## The command line: status 2, a one-paragraph message naming the input, no traceback


@pytest.fixture
def no_training(monkeypatch):
    """Bad input must stop a run before any training starts."""
    def fit(*args, **kwargs):
        raise AssertionError("training started before the bad input was reported")

    monkeypatch.setattr(keras.Model, "fit", fit)


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """A tiny run directory with a real SavedModel export (uint8 images in, probabilities out); no training."""
    run_dir = tmp_path_factory.mktemp("exported") / "run"
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    os.makedirs(run_dir / "export")
    model.export(str(run_dir / "export" / "saved_model"), format="tf_saved_model", verbose=False)
    (run_dir / "export" / "labels.txt").write_text("healthy\nrust\n")
    (run_dir / "export" / "export_metrics.json").write_text('{"image_size": 32}')
    return str(run_dir)


def _write_yaml(path, text):
    path.write_text(text)
    return str(path)


SMOKE_PRETRAINED = ["--set", "model.width_multiplier=1.0"]  # the smoke run's 0.35 exists for random weights only
CLI_CASES = {
    "missing config file": (lambda t: ["run", "crop-disease", "--config", "/nonexistent.yaml"],
                            ["/nonexistent.yaml", "does not exist"]),
    "unknown key in YAML": (lambda t: ["run", "crop-disease", "--config", _write_yaml(t / "c.yaml", "data:\n  sauce: x\n")],
                            ["data.sauce", "Unknown config key"]),
    "unknown key in --set": (lambda t: ["run", "crop-disease", "--set", "train.epochs=3"], ["train.epochs", "feature_epochs"]),
    "wrong type": (lambda t: ["run", "crop-disease", "--set", "data.augment=maybe"], ["data.augment", "expected bool"]),
    "wrong choice": (lambda t: ["run", "crop-disease", "--set", "train.strategy=gpu"], ["train.strategy", "'mirrored'"]),
    "missing data folder": (lambda t: ["run", "crop-disease", "--set", "data.source=/nonexistent"],
                            ["/nonexistent", "not a folder"]),
    "missing hub handle": (lambda t: ["run", "crop-disease", "--smoke", *SMOKE_PRETRAINED, "--set", "model.source=hub",
                                      "--set", "model.hub_handle=/nonexistent/module"],
                           ["/nonexistent/module", "saved_model.pb"]),
    "hub handle not a SavedModel": (lambda t: ["run", "crop-disease", "--smoke", *SMOKE_PRETRAINED, "--set", "model.source=hub",
                                               "--set", f"model.hub_handle={_not_a_saved_model(t / 'm', b'junk')}"],
                                    ["cannot be loaded as a SavedModel"]),
    "missing weights file": (lambda t: ["run", "crop-disease", "--smoke", *SMOKE_PRETRAINED,
                                        "--set", "model.source=/nonexistent.weights.h5"],
                             ["/nonexistent.weights.h5", "does not exist"]),
    "evaluate: export not a SavedModel": (lambda t: ["evaluate", _fake_run(t / "run"), "--data", str(t)],
                                          ["is not a SavedModel folder"]),
    "predict: garbage SavedModel": (lambda t: ["predict", _fake_run(t / "run", b"junk"), "x.png"],
                                    ["cannot be loaded as a SavedModel"]),
    "predict: garbage TFLite": (lambda t: ["predict", _fake_run(t / "run"), "x.png", "--format", "tflite"],
                                ["model_float32.tflite", "cannot be loaded as a TFLite model"]),
    "explain: missing model file": (lambda t: ["explain", str(t / "missing.keras"), "x.png"], ["missing.keras"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_exits_2_naming_it(case, tmp_path, capsys, no_training):
    argv, words = CLI_CASES[case]
    argv = argv(tmp_path)
    if argv[0] == "run":
        argv += ["--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tfcourse {argv[0]}: ") and "Traceback" not in err and err.count("\n") == 1
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize("name", ["bomb.png", "truncated.jpg", "zero_bytes.png"])
def test_cli_predict_refuses_a_broken_image(name, exported_run, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(BROKEN[name][0]())
    assert cli.main(["predict", exported_run, str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and BROKEN[name][1] in err
    good = tmp_path / "grey.png"
    good.write_bytes(ODD_VALID["grey.png"][0]())
    assert cli.main(["predict", exported_run, str(good), "--top-k", "1"]) == 0


def test_cli_explain_refuses_a_lambda_layer(lambda_model, tmp_path, capsys):
    image = tmp_path / "leaf.png"
    image.write_bytes(_encoded(_rgb(), "PNG"))
    assert cli.main(["explain", lambda_model, str(image)]) == 2
    err = capsys.readouterr().err
    assert "Lambda layer" in err and "safe mode refuses" in err


def test_python_m_tfcourse_exits_2_without_a_traceback(lambda_model, tmp_path):
    image = tmp_path / "leaf.png"
    image.write_bytes(_encoded(_rgb(), "PNG"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "tfcourse", "explain", lambda_model, str(image)],
                            capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "contains a Lambda layer" in result.stderr and lambda_model in result.stderr
