import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import save_feature_vector_module, save_yamnet_hub_stand_in
from tfcourse import UserError, hub
from tfcourse.models import yamnet


def _classifier(handle, trainable):
    images = keras.Input((16, 16, 3))
    layer = hub.HubModule(handle, trainable=trainable, name="hub")
    outputs = keras.layers.Dense(2, activation="softmax")(layer(images))
    model = keras.Model(images, outputs)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    return model, layer


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(32, 16, 16, 3)).astype("float32"), rng.integers(0, 2, 32)


def test_frozen_module_keeps_its_weights(hub_module_dir):
    model, layer = _classifier(hub_module_dir, trainable=False)
    assert [v.trainable for v in layer.module_variables] == [False, False]
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]  # the head only
    before = [v.numpy().copy() for v in layer.module_variables]
    head_before = model.layers[-1].kernel.numpy().copy()
    model.fit(*_data(), epochs=2, verbose=0)
    for variable, value in zip(layer.module_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert not np.allclose(model.layers[-1].kernel.numpy(), head_before)


def test_trainable_module_is_fine_tuned_in_place(hub_module_dir):
    model, layer = _classifier(hub_module_dir, trainable=True)
    assert [v.trainable for v in layer.module_variables] == [True, False]  # the module's own flags
    kernel_before = layer.module_variables[0].numpy().copy()
    mean_before = layer.module_variables[1].numpy().copy()
    model.fit(*_data(), epochs=2, verbose=0)
    assert np.abs(layer.module_variables[0].numpy() - kernel_before).max() > 1e-4
    np.testing.assert_array_equal(layer._module.kernel.numpy(), layer.module_variables[0].numpy())  # same variable
    np.testing.assert_array_equal(layer.module_variables[1].numpy(), mean_before)  # non-trainable stays


def test_keras_round_trip_and_export_parity(hub_module_dir, tmp_path):
    model, _ = _classifier(hub_module_dir, trainable=True)
    model.fit(*_data(), epochs=1, verbose=0)
    _assert_reload_and_export_parity(model, _data()[0], tmp_path, export_atol=1e-6)


def test_reload_refuses_a_different_module(hub_module_dir, tmp_path):
    model, _ = _classifier(hub_module_dir, trainable=False)
    model.save(tmp_path / "m.keras")
    other = tf.train.Checkpoint()
    other.variables = [tf.Variable(tf.ones([3, 8])), tf.Variable(tf.zeros([8])), tf.Variable(1.0)]
    other.__call__ = tf.function(
        lambda images, training=False: (tf.reduce_mean(images, [1, 2]) @ other.variables[0] + other.variables[1])
        * other.variables[2]
    )
    other.__call__.get_concrete_function(tf.TensorSpec([None, None, None, 3]), False)
    tf.saved_model.save(other, hub_module_dir)  # the handle now names another module
    with pytest.raises(Exception, match="no\\s+longer names the module"):
        keras.models.load_model(tmp_path / "m.keras")


def test_cached_handle_resolves_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    handle = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"
    cached = hub.cached_module_dir(handle)
    save_feature_vector_module(cached)
    assert hub.resolve_handle(handle) == cached
    assert hub.load_module(handle)(tf.zeros([1, 8, 8, 3]), training=False).shape == (1, 8)


def test_unreachable_handle_fails_fast_and_says_how_to_supply_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    start = time.perf_counter()
    with pytest.raises(UserError) as error:
        hub.resolve_handle("https://unreachable.invalid/models/feature_vector/1")
    assert time.perf_counter() - start < 3 * hub.NETWORK_PROBE_SECONDS
    assert "SavedModel folder" in str(error.value) and "TFHUB_CACHE_DIR" in str(error.value)


def test_local_path_must_be_a_saved_model(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(UserError, match="saved_model.pb"):
        hub.resolve_handle(str(tmp_path / "empty"))


def _assert_reload_and_export_parity(model, inputs, tmp_path, export_atol=1e-5):
    """The `.keras` reload gives the model's outputs (to 1e-6), and so does its `model.export()`."""
    expected = model.predict(inputs, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")  # safe_mode stays on
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), expected, atol=1e-6)
    model.export(str(tmp_path / "exported"), verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(exported.serve(tf.constant(inputs)).numpy(), expected, atol=export_atol)


@pytest.fixture(scope="module")
def yamnet_hub(tmp_path_factory):
    model = yamnet.YAMNet()
    model.build()
    return model, save_yamnet_hub_stand_in(tmp_path_factory.mktemp("yamnet") / "hub", model)


def _waveforms(batch, samples=yamnet.PATCH_SAMPLES + yamnet.PATCH_HOP_SAMPLES):
    return np.random.default_rng(3).normal(0, 0.1, (batch, samples)).astype("float32")


def test_yamnet_module_is_a_backbone_over_a_batch_of_waveforms(yamnet_hub, tmp_path):
    model, handle = yamnet_hub
    waveforms = _waveforms(3)
    inputs = keras.Input(waveforms.shape[1:])
    layer = hub.HubModule(handle, output_key=1, trainable=False, name="yamnet")
    embeddings = layer(inputs)
    assert tuple(embeddings.shape) == (None, 2, yamnet.EMBEDDING_SIZE)  # 2 patches per waveform
    assert len(layer.module_variables) == len(model.network.weights)
    assert sum(v.trainable for v in layer.module_variables) == 0
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(embeddings))
    classifier = keras.Model(inputs, outputs)

    for row, waveform in enumerate(waveforms):  # the same embeddings as the Keras YAMNet, per waveform
        np.testing.assert_allclose(layer(waveforms)[row], model(waveform)[1], atol=1e-5)
    classifier.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    before = [v.numpy().copy() for v in layer.module_variables]
    classifier.fit(waveforms, np.array([0, 1, 0]), epochs=2, verbose=0)
    for variable, value in zip(layer.module_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)

    _assert_reload_and_export_parity(classifier, waveforms, tmp_path)


def test_yamnet_module_fine_tunes_its_saved_trainable_variables_only(yamnet_hub):
    model, handle = yamnet_hub
    layer = hub.HubModule(handle, output_key=1, trainable=True)
    trainable = [v.name for v in layer.module_variables if v.trainable]
    assert len(trainable) == len(model.network.trainable_weights) > 0
    assert not any("moving" in name for name in trainable)  # batch norm statistics stay frozen


def test_module_with_several_outputs_needs_one_chosen(yamnet_hub):
    with pytest.raises(UserError, match="choose one with `output_key`"):
        hub.HubModule(yamnet_hub[1])


MOVINET_CLASSES = 4
STREAM_KERNEL = 3  # frames the stream stand-in's causal temporal convolution spans
STREAM_FEATURES = 6
STREAM_BUFFER = "state_block0_layer0_stream_buffer"
POOL_BUFFER = "state_block0_layer0_pool_buffer"
FRAME_COUNT = "state_block0_layer0_pool_frame_count"


def save_movinet_base_stand_in(path, exported_from_keras):
    """A stand-in for the TF Hub MoViNet base classifiers
    (tensorflow/movinet/a0/base/kinetics-600/classification/3).

    Same interface: `__call__({"image": video})` on float32 video [batch, frames, height, width, 3]
    returns logits [batch, classes]. The real modules are tf.keras exports, whose `__call__` also
    takes `training` and which list `variables`: `exported_from_keras` builds one the same way
    (with tf_keras); otherwise a plain tf.Module that takes the dict alone.
    """
    if exported_from_keras:
        import tf_keras

        image = tf_keras.Input([None, None, None, 3], name="image")
        features = tf_keras.layers.BatchNormalization(name="bn")(tf_keras.layers.GlobalAveragePooling3D()(image))
        model = tf_keras.Model({"image": image}, tf_keras.layers.Dense(MOVINET_CLASSES, name="logits")(features))
        model({"image": tf.zeros([1, 1, 2, 2, 3])})
        tf_keras.models.save_model(model, str(path))
        return str(path)
    module = tf.Module()
    module.kernel = tf.Variable(tf.random.stateless_normal([3, MOVINET_CLASSES], seed=[5, 0]), name="dense/kernel")
    module.bias = tf.Variable(tf.zeros([MOVINET_CLASSES]), name="dense/bias")

    @tf.function(input_signature=[{"image": tf.TensorSpec([None, None, None, None, 3], tf.float32, name="image")}])
    def call(inputs):
        return tf.reduce_mean(inputs["image"], axis=[1, 2, 3]) @ module.kernel + module.bias

    module.__call__ = call
    tf.saved_model.save(module, str(path))
    return str(path)


def save_movinet_stream_stand_in(path, init_states_as_signature=True):
    """A stand-in for the TF Hub MoViNet stream classifiers
    (tensorflow/movinet/a0/stream/kinetics-600/classification/3).

    Same interface: an `init_states` signature takes the video's shape (int32 [5]) and returns the
    states by name (float buffers and an int32 frame count); `__call__({**states, "image": clip},
    training=False)` returns (logits, new states). Its stream semantics are real: a causal temporal
    convolution over the frames (the stream buffer keeps the last STREAM_KERNEL - 1 frames) and a
    cumulative mean pool (a running sum and the frame count), so feeding the frames one at a time
    ends with the logits of the whole clip. `init_states_as_signature=False` puts `init_states` on
    the module as a tf.function instead, as some exports do.
    """
    module = tf.Module()
    module.temporal = tf.Variable(tf.random.stateless_normal([STREAM_KERNEL, 3, STREAM_FEATURES], seed=[6, 0]))
    module.kernel = tf.Variable(tf.random.stateless_normal([STREAM_FEATURES, MOVINET_CLASSES], seed=[7, 0]))
    module.bias = tf.Variable(tf.fill([MOVINET_CLASSES], 0.1))

    @tf.function(input_signature=[tf.TensorSpec([5], tf.int32)])
    def init_states(input_shape):
        batch = input_shape[0]
        return {
            STREAM_BUFFER: tf.zeros([batch, STREAM_KERNEL - 1, 1, 1, 3]),
            POOL_BUFFER: tf.zeros([batch, 1, 1, 1, STREAM_FEATURES]),
            FRAME_COUNT: tf.zeros([1], tf.int32),
        }

    specs = {
        STREAM_BUFFER: tf.TensorSpec([None, STREAM_KERNEL - 1, 1, 1, 3], tf.float32, name=STREAM_BUFFER),
        POOL_BUFFER: tf.TensorSpec([None, 1, 1, 1, STREAM_FEATURES], tf.float32, name=POOL_BUFFER),
        FRAME_COUNT: tf.TensorSpec([1], tf.int32, name=FRAME_COUNT),
        "image": tf.TensorSpec([None, None, None, None, 3], tf.float32, name="image"),
    }

    @tf.function(input_signature=[specs, tf.TensorSpec([], tf.bool)])
    def call(inputs, training=False):
        frames = tf.reduce_mean(inputs["image"], axis=[2, 3], keepdims=True)  # [batch, n, 1, 1, 3]
        window = tf.concat([inputs[STREAM_BUFFER], frames], axis=1)  # the past frames, then the new ones
        features = tf.nn.relu(tf.nn.conv1d(window[:, :, 0, 0], module.temporal, 1, "VALID"))  # [batch, n, features]
        pool = inputs[POOL_BUFFER] + tf.reduce_sum(features, axis=1)[:, None, None, None]
        count = inputs[FRAME_COUNT] + tf.shape(frames)[1]
        mean = tf.reshape(pool, [-1, STREAM_FEATURES]) / tf.cast(count, tf.float32)
        states = {STREAM_BUFFER: window[:, -(STREAM_KERNEL - 1) :], POOL_BUFFER: pool, FRAME_COUNT: count}
        return mean @ module.kernel + module.bias, states

    module.__call__ = call
    if init_states_as_signature:
        tf.saved_model.save(module, str(path), signatures={"init_states": init_states.get_concrete_function()})
    else:
        module.init_states = init_states
        tf.saved_model.save(module, str(path), signatures={})
    return str(path)


def _videos(batch=6, frames=5, size=8):
    rng = np.random.default_rng(4)
    return rng.uniform(size=(batch, frames, size, size, 3)).astype("float32"), rng.integers(0, 2, batch)


def _video_classifier(handle, trainable):
    videos = keras.Input(_videos()[0].shape[1:])
    layer = hub.HubModule(handle, input_key="image", trainable=trainable, name="movinet")
    outputs = keras.layers.Dense(2, activation="softmax")(layer(videos))
    model = keras.Model(videos, outputs)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    return model, layer


@pytest.mark.parametrize("exported_from_keras", [True, False], ids=["keras-export", "plain-module"])
def test_movinet_base_module_is_a_frozen_backbone_over_video(exported_from_keras, tmp_path):
    handle = save_movinet_base_stand_in(tmp_path / "base", exported_from_keras)
    model, layer = _video_classifier(handle, trainable=False)
    assert tuple(layer.output.shape) == (None, MOVINET_CLASSES)
    videos, labels = _videos()
    module = tf.saved_model.load(handle)
    np.testing.assert_allclose(layer(videos), module({"image": tf.constant(videos)}), atol=1e-6)
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]  # the head only
    before = [v.numpy().copy() for v in layer.module_variables]
    model.fit(videos, labels, epochs=2, verbose=0)
    for variable, value in zip(layer.module_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)

    _assert_reload_and_export_parity(model, videos, tmp_path)


def test_movinet_base_module_fine_tunes_in_place(tmp_path):
    handle = save_movinet_base_stand_in(tmp_path / "base", exported_from_keras=True)
    model, layer = _video_classifier(handle, trainable=True)
    flags = {v.name: v.trainable for v in layer.module_variables}
    assert flags["logits_kernel_0"] and not flags["bn_moving_mean_0"]  # the module's own flags
    before = {v.name: v.numpy().copy() for v in layer.module_variables}
    model.fit(*_videos(), epochs=2, verbose=0)
    after = {v.name: v.numpy() for v in layer.module_variables}
    assert np.abs(after["logits_kernel_0"] - before["logits_kernel_0"]).max() > 1e-4
    np.testing.assert_array_equal(after["bn_moving_mean_0"], before["bn_moving_mean_0"])
    kernel = [v for v in layer._module.variables if v.name == "logits/kernel:0"][0]
    np.testing.assert_array_equal(kernel.numpy(), after["logits_kernel_0"])  # the same variable


def test_dict_input_modules_need_the_right_input_key(tmp_path):
    base = save_movinet_base_stand_in(tmp_path / "base", exported_from_keras=False)
    with pytest.raises(UserError, match="input_key='image'"):
        hub.HubModule(base)
    with pytest.raises(UserError, match="no input named 'video'"):
        hub.HubModule(base, input_key="video")
    stream = save_movinet_stream_stand_in(tmp_path / "stream")
    with pytest.raises(UserError, match="HubStreamModule"):
        hub.HubModule(stream, input_key="image")
    with pytest.raises(UserError, match="not a stream module"):
        hub.HubStreamModule(base)


@pytest.mark.parametrize("init_states_as_signature", [True, False], ids=["signature", "attribute"])
def test_stream_module_frame_by_frame_equals_the_whole_clip(init_states_as_signature, tmp_path):
    handle = save_movinet_stream_stand_in(tmp_path / "stream", init_states_as_signature)
    stream = hub.HubStreamModule(handle)
    video, _ = _videos(batch=2, frames=6)
    states = stream.initial_states(video.shape)
    assert sorted(states) == sorted([STREAM_BUFFER, POOL_BUFFER, FRAME_COUNT])
    assert states[FRAME_COUNT].dtype == tf.int32 and states[STREAM_BUFFER].shape == (2, STREAM_KERNEL - 1, 1, 1, 3)

    module = tf.saved_model.load(handle)  # the whole clip at once, through the module itself
    whole, _ = module({**states, "image": tf.constant(video)}, training=False)
    for t in range(video.shape[1]):
        logits, states = stream(video[:, t : t + 1], states)
    np.testing.assert_allclose(logits, whole, atol=1e-6)
    assert int(states[FRAME_COUNT][0]) == video.shape[1]

    per_frame = hub.stream_logits(stream, video)
    assert per_frame.shape == (2, video.shape[1], MOVINET_CLASSES)
    assert np.abs(per_frame[:, -1] - per_frame[:, 0]).min() > 1e-3  # the memory of past frames counts
    for t in range(video.shape[1]):  # causal: after frame t, the logits of the clip up to t
        prefix, _ = module({**stream.initial_states(video.shape), "image": tf.constant(video[:, : t + 1])})
        np.testing.assert_allclose(per_frame[:, t], prefix, atol=1e-6)

    any_video = tf.TensorSpec([None, None, 8, 8, 3])  # frames unknown: a loop in the graph
    in_graph = tf.function(lambda v: hub.stream_logits(stream, v), input_signature=[any_video])
    np.testing.assert_allclose(in_graph(video), per_frame, atol=1e-6)
    assert len(stream.module_variables) == 3 and not any(np.isnan(v.numpy()).any() for v in stream.module_variables)
