import os

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
