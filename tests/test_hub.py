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
    x, _ = _data()
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")  # safe_mode stays on
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)
    model.export(str(tmp_path / "exported"), verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "exported"))
    served = exported.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-6)


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

    expected = classifier.predict(waveforms, verbose=0)
    classifier.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(waveforms, verbose=0), expected, atol=1e-6)
    classifier.export(str(tmp_path / "exported"), verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(exported.serve(tf.constant(waveforms)).numpy(), expected, atol=1e-5)


def test_yamnet_module_fine_tunes_its_saved_trainable_variables_only(yamnet_hub):
    model, handle = yamnet_hub
    layer = hub.HubModule(handle, output_key=1, trainable=True)
    trainable = [v.name for v in layer.module_variables if v.trainable]
    assert len(trainable) == len(model.network.trainable_weights) > 0
    assert not any("moving" in name for name in trainable)  # batch norm statistics stay frozen


def test_module_with_several_outputs_needs_one_chosen(yamnet_hub):
    with pytest.raises(UserError, match="choose one with `output_key`"):
        hub.HubModule(yamnet_hub[1])
