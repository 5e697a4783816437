"""Model sources: TF Hub handles, the TFHUB_CACHE_DIR cache and local SavedModel directories.

`hub.KerasLayer` cannot be used inside Keras 3 models (a functional model fails with "A
KerasTensor cannot be used as input to a TensorFlow function"; Sequential refuses it), so
`HubModule` is a small Keras 3 layer of our own: it holds `hub.load(handle)`, exposes the module's
own variables as `keras.Variable`s (the same variables, not copies), and saves and loads them in
a fixed order, so it can be frozen or fine-tuned, survives a `.keras` round trip and exports.

A SavedModel is a program: loading one runs its graph with your privileges. Only load modules
from handles and folders you trust.
"""

import hashlib
import os
import socket
import urllib.parse

import keras
import tensorflow as tf
import tensorflow_hub as hub

from tfcourse import UserError

NETWORK_PROBE_SECONDS = 5


def _cache_dir():
    return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "tfhub_modules"
    )


def cached_module_dir(handle):
    """Where tensorflow_hub caches `handle` (the folder is named by the SHA-1 of the handle)."""
    return os.path.join(_cache_dir(), hashlib.sha1(handle.encode("utf8")).hexdigest())


def _is_saved_model_dir(path):
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def _check_reachable(handle):
    """Fails within seconds, with a way out, where the host of a remote handle can't be reached."""
    host = urllib.parse.urlparse(handle).hostname
    try:
        socket.create_connection((host, 443), timeout=NETWORK_PROBE_SECONDS).close()
    except OSError as error:
        raise UserError(
            f"Cannot download the TF Hub module {handle!r}: {host} is unreachable ({error}). "
            "Supply the module locally instead: give the path of its SavedModel folder as the "
            f"handle, or put it in the cache folder {cached_module_dir(handle)} "
            "(TFHUB_CACHE_DIR names the cache)."
        ) from None


def resolve_handle(handle):
    """Returns a local SavedModel folder for `handle`, or `handle` itself if it must be downloaded."""
    if "://" not in handle:
        path = os.path.expanduser(handle)
        if not _is_saved_model_dir(path):
            raise UserError(
                f"Hub module {handle!r} is neither a URL handle nor a folder holding a "
                "saved_model.pb."
            )
        return path
    cached = cached_module_dir(handle)
    if _is_saved_model_dir(cached):
        return cached
    _check_reachable(handle)
    return handle


def load_module(handle):
    """`hub.load` of a URL handle, a cached module or a local SavedModel folder (see above)."""
    return hub.load(resolve_handle(handle))


def _variable_name(variable):
    return variable.name.replace(":", "_").replace("/", "_")


@keras.saving.register_keras_serializable(package="tfcourse")
class HubModule(keras.layers.Layer):
    """A TF2 Hub SavedModel called as `module(inputs, training=False)` inside a Keras 3 model.

    The module always runs in inference mode, so its batch norm statistics stay fixed whether
    the layer is frozen (`trainable=False`) or fine-tuned.
    """

    def __init__(self, handle, **kwargs):
        super().__init__(**kwargs)
        self.handle = handle
        self._module = load_module(handle)
        # Reusable SavedModels (the TF2 hub format) list `variables` and `trainable_variables`.
        if not hasattr(self._module, "variables"):
            raise UserError(
                f"Hub module {handle!r} is not a reusable TF2 SavedModel: it lists no `variables`."
            )
        trainable = getattr(self._module, "trainable_variables", None)
        trainable_ids = {id(v) for v in trainable} if trainable is not None else None
        self.module_variables = [
            keras.Variable(
                v,
                name=_variable_name(v),
                trainable=v.trainable if trainable_ids is None else id(v) in trainable_ids,
            )
            for v in self._module.variables
        ]
        for variable in self.module_variables:  # Keras applied `trainable=` before they existed
            variable.trainable = variable.trainable and self.trainable
        self.built = True

    def call(self, inputs):
        return self._module(inputs, training=False)

    def compute_output_spec(self, inputs):
        output = self._module(tf.zeros([1] + list(inputs.shape[1:]), inputs.dtype), training=False)
        return keras.KerasTensor((inputs.shape[0],) + tuple(output.shape[1:]), output.dtype)

    def save_own_variables(self, store):
        for i, variable in enumerate(self.module_variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        if len(store.keys()) != len(self.module_variables):
            raise UserError(
                f"The saved weights of hub module {self.handle!r} hold {len(store.keys())} "
                f"variables but the module has {len(self.module_variables)}: the handle no "
                "longer names the module the model was saved with."
            )
        for i, variable in enumerate(self.module_variables):
            variable.assign(store[str(i)])

    def get_config(self):
        return {**super().get_config(), "handle": self.handle}
