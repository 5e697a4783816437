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


def module_variables(module):
    """-> (variables, ids of the trainable ones) of a loaded SavedModel.

    Reusable TF2 modules list `variables` and `trainable_variables`. Others, such as TF Hub
    YAMNet (a plain `tf.Module`), list neither: then the variables are those its `__call__`
    reads, each with the trainable flag it was saved with.
    """
    if hasattr(module, "variables"):
        variables = list(module.variables)
        trainable = getattr(module, "trainable_variables", None)
        trainable = variables if trainable is None else trainable
        return variables, {id(v) for v in trainable}
    functions = getattr(getattr(module, "__call__", None), "concrete_functions", [])
    variables = list({id(v): v for f in functions for v in f.variables}.values())
    return variables, {id(v) for v in variables if v.trainable}


def _call_signature(handle, module, output_key):
    """-> (rank of the module's input, whether `__call__` takes a `training` argument)."""
    functions = module.__call__.concrete_functions
    if not functions:
        raise UserError(f"Hub module {handle!r} has no traced `__call__`: it is not a TF2 SavedModel module.")
    if output_key is None and len(tf.nest.flatten(functions[0].structured_outputs)) > 1:
        raise UserError(
            f"Hub module {handle!r} returns several outputs: choose one with `output_key` "
            "(a tuple index or a dict key)."
        )
    args, kwargs = functions[0].structured_input_signature
    rank = args[0].shape.rank if isinstance(args[0], tf.TensorSpec) else None
    return rank, len(args) > 1 or "training" in kwargs


@keras.saving.register_keras_serializable(package="tfcourse")
class HubModule(keras.layers.Layer):
    """A TF2 Hub SavedModel called inside a Keras 3 model.

    - Modules that take `training` (image feature vectors) always get `training=False`, so their
      batch norm statistics stay fixed whether the layer is frozen or fine-tuned.
    - Modules that take one example, such as YAMNet's 1-D waveform, are mapped over the batch:
      waveforms [batch, samples] give [batch, frames, ...].
    - `output_key` picks one output of a module that returns several: an index into a tuple (YAMNet
      returns scores, embeddings, log-mel spectrogram, so 1 is its embeddings) or a dict key.
    """

    def __init__(self, handle, output_key=None, **kwargs):
        super().__init__(**kwargs)
        self.handle = handle
        self.output_key = output_key
        self._module = load_module(handle)
        self._example_rank, self._takes_training = _call_signature(handle, self._module, output_key)
        variables, trainable_ids = module_variables(self._module)
        self.module_variables = [
            keras.Variable(v, name=_variable_name(v), trainable=id(v) in trainable_ids) for v in variables
        ]
        for variable in self.module_variables:  # Keras applied `trainable=` before they existed
            variable.trainable = variable.trainable and self.trainable
        self.built = True

    def _run(self, inputs):
        outputs = self._module(inputs, training=False) if self._takes_training else self._module(inputs)
        return outputs if self.output_key is None else outputs[self.output_key]

    def call(self, inputs):
        if self._example_rank is None or inputs.shape.rank == self._example_rank:
            return self._run(inputs)
        return tf.map_fn(self._run, inputs, fn_output_signature=tf.float32)  # hub features are float32

    def compute_output_spec(self, inputs):
        spec = tf.TensorSpec(inputs.shape, inputs.dtype)
        output = tf.function(self.call).get_concrete_function(spec).structured_outputs
        return keras.KerasTensor(tuple(output.shape), output.dtype)

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
        return {**super().get_config(), "handle": self.handle, "output_key": self.output_key}
