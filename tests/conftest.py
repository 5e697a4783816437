import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture
def assets_dir():
    """The real offline assets (TFCOURSE_ASSETS); tests that need them skip where they are absent."""
    path = os.environ.get("TFCOURSE_ASSETS")
    if not path:
        pytest.skip("TFCOURSE_ASSETS is not set: no real models or data to check against.")
    if not os.path.isdir(path):
        pytest.skip(f"TFCOURSE_ASSETS={path} is not a folder.")
    return path


def save_feature_vector_module(path, features=8, seed=1):
    """A tiny stand-in for a TF Hub image feature-vector module, saved as a reusable SavedModel.

    Same interface as the real ones (e.g. EfficientNet-B0 feature-vector): called as
    `module(images, training=False)` on float images in [0, 1], returns [batch, features], and
    lists `variables` and `trainable_variables` (here a conv kernel and a frozen statistic).
    """
    module = tf.train.Checkpoint()
    module.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, features], seed=[seed, 0]), name="conv/kernel")
    module.moving_mean = tf.Variable(tf.fill([features], 0.1), trainable=False, name="bn/moving_mean")
    module.variables = [module.kernel, module.moving_mean]
    module.trainable_variables = [module.kernel]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([], tf.bool)])
    def call(images, training=False):
        x = tf.nn.relu(tf.nn.conv2d(images, module.kernel, 2, "SAME") - module.moving_mean)
        return tf.reduce_mean(x, axis=[1, 2])

    module.__call__ = call
    tf.saved_model.save(module, str(path))
    return str(path)


@pytest.fixture
def hub_module_dir(tmp_path):
    return save_feature_vector_module(tmp_path / "feature_vector")


def save_yamnet_hub_stand_in(path, model):
    """A stand-in for the TF Hub YAMNet module (google/yamnet/1), computed by `model` (a built YAMNet).

    Same interface as the real one: a plain `tf.Module` (it lists no `variables`) whose
    `__call__(waveform)` takes a 1-D float32 waveform and returns (scores, embeddings, log-mel
    spectrogram); its variables carry the published names, such as `layer2/depthwise_conv/bn/beta`
    and `dense/kernel`.
    """
    def published_name(path):  # layer2_depthwise_conv_bn/beta -> layer2/depthwise_conv/bn/beta; logits -> dense
        layer, weight = path.split("/")
        layer = "dense" if layer == "logits" else re.sub(r"^(layer\d+)_", r"\1/", layer).replace("conv_bn", "conv/bn")
        return f"{layer}/{weight}"

    module = tf.Module()
    published = {
        w.path: tf.Variable(w.numpy(), name=published_name(w.path), trainable=w.trainable)
        for w in model.network.weights
    }
    module.published = list(published.values())
    trainable = [published[w.path] for w in model.network.trainable_weights]
    non_trainable = [published[w.path] for w in model.network.non_trainable_weights]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def call(waveform):
        outputs, _ = model.stateless_call(trainable, non_trainable, waveform)
        return outputs

    module.__call__ = call
    tf.saved_model.save(module, str(path))
    return str(path)
