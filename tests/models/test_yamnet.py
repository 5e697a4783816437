import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import save_yamnet_hub_stand_in
from tfcourse import UserError
from tfcourse.export import TFLiteModel
from tfcourse.models import yamnet
from tfcourse.models.tflite_import import open_interpreter, read_tflite_ops


def _waveform(seconds, seed=0):
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * yamnet.SAMPLE_RATE)).astype("float32")


@pytest.mark.parametrize("samples, patches", [(0, 1), (15600, 1), (15601, 2), (15600 + 7680, 2), (16000 * 5, 10)])
def test_padding_and_patch_count_follow_the_published_model(samples, patches):
    padded = yamnet.pad_waveform(tf.zeros([samples]))
    assert (int(tf.shape(padded)[0]) - yamnet.PATCH_SAMPLES) % yamnet.PATCH_HOP_SAMPLES == 0
    model = yamnet.YAMNet()
    scores, embeddings, log_mel = model(tf.zeros([samples]))
    assert scores.shape == (patches, 521) and embeddings.shape == (patches, 1024)
    assert log_mel.shape == (96 + 48 * (patches - 1), 64)


def test_front_end_matches_the_stft_definition():
    waveform = _waveform(2.0)
    magnitude = tf.abs(tf.signal.stft(waveform, 400, 160, 512))  # periodic Hann by default
    mel = tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125, 7500)
    expected = tf.math.log(magnitude @ mel + 0.001)
    np.testing.assert_allclose(yamnet.LogMelSpectrogram()(waveform), expected, atol=2e-3)


def test_waveform_model_converts_with_builtin_ops_only_and_matches(tmp_path):
    model = yamnet.YAMNet()
    waveform = _waveform(1.5)
    expected = [np.asarray(t) for t in model(waveform)]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.call, input_signature=[tf.TensorSpec([None], tf.float32)])
    archive.write_out(str(tmp_path / "saved_model"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved_model"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # fails if any op needs Flex
    (tmp_path / "yamnet.tflite").write_bytes(converter.convert())
    interpreter = TFLiteModel(str(tmp_path / "yamnet.tflite")).interpreter
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [len(waveform)])
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, waveform)
    interpreter.invoke()
    outputs = {o["shape"][-1]: interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()}
    for reference in expected:
        np.testing.assert_allclose(outputs[reference.shape[-1]], reference, atol=1e-4)


def test_keras_round_trip(tmp_path):
    model = yamnet.YAMNet()
    waveform = _waveform(1.0)
    model.save(tmp_path / "yamnet.keras")
    restored = keras.models.load_model(tmp_path / "yamnet.keras")
    for a, b in zip(restored(waveform), model(waveform)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _randomised_yamnet():
    model = yamnet.YAMNet()
    model.build()
    for w in model.weights:
        w.assign(np.random.default_rng(len(w.path)).normal(0, 0.1, w.shape))
    return model


def test_hub_weights_load_by_their_published_names(tmp_path):
    source = _randomised_yamnet()
    module = tf.saved_model.load(save_yamnet_hub_stand_in(tmp_path / "hub", source))
    assert not hasattr(module, "variables")  # like the real module: found through its __call__
    target = yamnet.YAMNet()
    target.build()
    yamnet.load_hub_weights(target.network, module)
    waveform = _waveform(1.5)
    for a, b, c in zip(target(waveform), source(waveform), module(waveform)):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=1e-5)
    module.variables = module.published[:-1]
    with pytest.raises(UserError, match="got no value"):
        yamnet.load_hub_weights(yamnet.yamnet_network(), module)


@pytest.fixture(scope="module")
def tflite_yamnet():
    path = os.environ.get("TFCOURSE_ASSETS")
    if not path or not os.path.isdir(path):
        pytest.skip("TFCOURSE_ASSETS is not set: no real models or data to check against.")
    interpreter = open_interpreter(os.path.join(path, "models", "yamnet", "yamnet.tflite"), keep_intermediates=True)
    network = yamnet.yamnet_network()
    yamnet.load_tflite_weights(network, interpreter)
    clips = sorted(glob.glob(os.path.join(path, "data", "esc50_16k", "audio", "*.wav")))
    return interpreter, network, clips


def test_imported_layers_match_tflite_fed_its_own_inputs(tflite_yamnet):
    interpreter, network, clips = tflite_yamnet
    worst_raw, worst_emulated = {}, {}
    for path in clips[::15]:
        waveform = tf.audio.decode_wav(tf.io.read_file(path)).audio[:, 0].numpy()[: yamnet.PATCH_SAMPLES]
        for worst, emulate in ((worst_raw, False), (worst_emulated, True)):
            for name, error in yamnet.tflite_layer_errors(network, interpreter, waveform, emulate).items():
                worst[name] = max(worst.get(name, 0.0), error)
    assert len(worst_raw) == 28  # 27 convolutions and the classifier
    print(f"worst relative error: raw {max(worst_raw.values()):.4f}, hybrid inputs emulated {max(worst_emulated.values()):.2e}")
    assert max(worst_emulated.values()) < 1e-3  # the imported weights are the file's
    float_kernels = [n for n in worst_raw if n == "layer1_conv" or "depthwise" in n]
    assert max(worst_raw[n] for n in float_kernels) < 1e-4  # kernels TFLite runs in float match exactly
    assert max(worst_raw.values()) < 0.2  # int8 kernels quantize their inputs on the fly


def test_front_end_mel_matrix_is_the_files_within_one_int8_step(tflite_yamnet):
    interpreter, _, _ = tflite_yamnet
    (op, (_, matrix, bias)), = [(op, c) for op, c in read_tflite_ops(interpreter, ("FULLY_CONNECTED",))
                                if c[1].shape == (64, 257)]
    step = next(t for t in interpreter.get_tensor_details() if t["index"] == op["inputs"][1])["quantization"][0]
    ours = tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125, 7500).numpy().T
    assert np.abs(matrix - ours).max() <= step
    np.testing.assert_allclose(bias, yamnet.LOG_OFFSET)


def test_whole_model_agrees_with_tflite_on_real_clips(tflite_yamnet):
    interpreter, network, clips = tflite_yamnet
    model = yamnet.YAMNet()
    model.build()
    model.network.set_weights(network.get_weights())
    agree = []
    for path in clips[::10]:
        waveform = tf.audio.decode_wav(tf.io.read_file(path)).audio[:, 0].numpy()[: yamnet.PATCH_SAMPLES]
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], waveform[None])
        interpreter.invoke()
        tflite_scores = next(interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details() if o["shape"][-1] == 521)
        agree.append(int(np.argmax(tflite_scores)) == int(np.argmax(model(waveform)[0][0])))
    print(f"top-1 agreement on {len(agree)} patches: {np.mean(agree):.2f}")
    assert np.mean(agree) >= 0.7
