import keras
import numpy as np
import pytest
import scipy.signal

from tfcourse import UserError
from tfcourse.models import movinet
from tfcourse.export import TFLiteStream, convert_tflite
from tfcourse.models.tflite_import import op_names, open_interpreter

SIZE = 48
FRAMES = 6


def _video(batch=2, frames=FRAMES, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, frames, SIZE, SIZE, 3)).astype("float32")


def _randomise(model, seed=0):
    """Weights that make every path matter: nonzero ReZero scales, batch norm statistics away from 0 and 1,
    a classifier far from uniform."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name = weight.path.split("/")[-1]
        if name == "scale":
            weight.assign(rng.uniform(0.5, 1.0))
        elif name in ("moving_mean", "beta"):
            weight.assign(rng.normal(0, 0.1, weight.shape))
        elif name == "moving_variance":
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
        elif weight.path.startswith("probabilities/kernel"):
            weight.assign(rng.normal(0, 0.3, weight.shape))


def _classifier(causal=True, frames=None, spec="tiny"):
    backbone = movinet.movinet_backbone(spec, causal=causal, frames=frames, size=SIZE)
    classifier = movinet.movinet_classifier(backbone, num_classes=5, head_filters=32)
    _randomise(classifier)
    return classifier


def test_a0_matches_model_gardens_size():
    backbone = movinet.movinet_backbone("a0", causal=True)
    classifier = movinet.movinet_classifier(backbone, num_classes=600, head_filters=2048)
    assert backbone.output.shape == (None, 480)
    # The paper's Table 1 lists MoViNet-A0 at 3.1M parameters (Kinetics-600 classifier).
    assert round(classifier.count_params() / 1e6, 1) == 3.1
    assert len([layer for layer in backbone.layers if layer.name.endswith("_rezero")]) == 15


def test_stream_frame_by_frame_equals_the_whole_clip():
    classifier = _classifier()
    stream = movinet.stream_classifier(classifier, "tiny", SIZE)
    video = _video()
    whole = classifier(video).numpy()
    per_frame = movinet.stream_outputs(stream, video)
    assert per_frame.shape == (2, FRAMES, 5)
    assert np.abs(whole - 1 / 5).max() > 0.05  # the check below compares outputs that differ by clip
    np.testing.assert_allclose(per_frame[:, -1], whole, atol=1e-5)
    # after k frames the stream has seen exactly the first k frames
    np.testing.assert_allclose(per_frame[:, 2], classifier(video[:, :3]).numpy(), atol=1e-5)
    features = movinet.stream_outputs(movinet.stream_classifier(classifier, "tiny", SIZE, frames_per_step=2), video)
    np.testing.assert_allclose(features[:, -1], whole, atol=1e-5)


def test_causal_form_never_sees_the_future_and_the_base_form_does():
    video = _video(batch=1)
    later_changed = video.copy()
    later_changed[:, -1] = 1 - later_changed[:, -1]
    causal = movinet.movinet_backbone("tiny", causal=True, size=SIZE)
    _randomise(causal)
    base = movinet.movinet_backbone("tiny", causal=False, size=SIZE)
    movinet.copy_backbone_weights(causal, base)
    first = causal(video[:, :-1]).numpy()
    assert np.abs(causal(later_changed[:, :-1]).numpy() - first).max() == 0
    assert np.abs(base(video).numpy() - base(later_changed).numpy()).max() > 1e-3
    # the base form's temporal convolutions are centred: frame 0 already sees frame 1
    one = base(video[:, :1]).numpy()
    assert np.abs(one - causal(video[:, :1]).numpy()).max() > 1e-3


def test_state_shapes_are_what_the_stream_model_reads_and_writes():
    stream = movinet.movinet_stream_backbone("a0", size=172)
    expected = movinet.stream_state_shapes("a0", 172)
    assert {name: tuple(spec.shape[1:]) for name, spec in stream.input.items() if name != "image"} == expected
    assert {name: tuple(spec.shape[1:]) for name, spec in stream.output.items() if name != "features"} == expected
    assert expected["state_block0_layer0_pool_buffer"] == (1, 1, 1, 24)
    assert expected["state_block1_layer0_stream_buffer"] == (2, 43, 43, 80)  # 172 / 2 / 2, before its stride
    assert expected["state_block4_layer0_stream_buffer"] == (4, 11, 11, 384)


@pytest.mark.parametrize("padding, kernel, stride", [("same", (3, 3, 3), 1), ("causal", (5, 3, 3), 2),
                                                     ("causal", (1, 5, 5), 2), ("valid", (3, 3, 3), 1)])
def test_depthwise_conv3d_is_a_per_channel_3d_correlation(padding, kernel, stride):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 7, 10, 10, 4)).astype("float32")
    layer = movinet.DepthwiseConv3D(kernel, (1, stride, stride), padding)
    y = layer(x).numpy()
    taps = kernel[0]
    time_pad = {"same": ((taps - 1) // 2, taps // 2), "causal": (taps - 1, 0), "valid": (0, 0)}[padding]
    out_size = -(-10 // stride)
    space_total = max((out_size - 1) * stride + kernel[1] - 10, 0)  # TF "SAME": the extra pixel goes at the end
    space_pad = (space_total // 2, space_total - space_total // 2)
    padded = np.pad(x[0], (time_pad, space_pad, space_pad, (0, 0)))
    kernel_values = layer.kernel.numpy()[..., 0, :]
    for channel in range(4):
        expected = scipy.signal.correlate(padded[..., channel], kernel_values[..., channel], mode="valid")
        np.testing.assert_allclose(y[0, ..., channel], expected[:, ::stride, ::stride], atol=1e-4)


def test_skip_pool_equals_keras_average_pooling_3d():
    x = np.random.default_rng(2).normal(size=(2, 3, 11, 11, 5)).astype("float32")
    expected = keras.layers.AveragePooling3D((1, 3, 3), (1, 2, 2), padding="same")(x)
    np.testing.assert_allclose(movinet.FramewiseAveragePool()(x), expected, atol=1e-6)


def test_keras_reload_matches(tmp_path):
    classifier = _classifier()
    classifier.save(tmp_path / "movinet.keras")
    reloaded = keras.saving.load_model(tmp_path / "movinet.keras")
    video = _video()
    np.testing.assert_allclose(reloaded(video), classifier(video), atol=1e-6)


def test_stream_tflite_has_builtin_ops_only_and_matches_frame_by_frame(tmp_path):
    classifier = _classifier(frames=FRAMES)
    stream = movinet.stream_classifier(classifier, "tiny", SIZE)
    stream.export(str(tmp_path / "stream"), verbose=False)
    tflite_path = tmp_path / "stream.tflite"
    tflite_path.write_bytes(convert_tflite(str(tmp_path / "stream"), "float32"))  # builtin ops only, or it raises
    stream_tflite = TFLiteStream(str(tflite_path))
    assert {"CONV_3D", "DEPTHWISE_CONV_2D", "CONCATENATION"} <= stream_tflite.op_names
    assert all(name.isupper() for name in stream_tflite.op_names)  # no custom or Flex ops
    assert len(stream_tflite.state_names) == len(movinet.stream_state_shapes("tiny", SIZE))
    video = _video(batch=1)
    per_frame = stream_tflite.run(video)
    assert per_frame.shape == (1, FRAMES, 5)
    np.testing.assert_allclose(per_frame[:, -1], classifier(video).numpy(), atol=1e-5)


def test_only_a_causal_classifier_streams_and_specs_are_checked():
    with pytest.raises(ValueError, match="not causal"):
        movinet.stream_classifier(_classifier(causal=False), "tiny", SIZE)
    with pytest.raises(UserError, match="a7"):
        movinet.movinet_backbone("a7")


def test_base_form_converts_with_builtin_ops_only_and_matches(tmp_path):
    classifier = _classifier(causal=False, frames=FRAMES)
    classifier.export(str(tmp_path / "base"), verbose=False)
    tflite_path = tmp_path / "base.tflite"
    tflite_path.write_bytes(convert_tflite(str(tmp_path / "base"), "float32"))
    interpreter = open_interpreter(str(tflite_path))
    assert "CONV_3D" in op_names(interpreter) and all(name.isupper() for name in op_names(interpreter))
    video = _video(batch=1)
    runner = interpreter.get_signature_runner()
    [probabilities] = runner(image=video).values()
    np.testing.assert_allclose(probabilities, classifier(video).numpy(), atol=1e-5)
