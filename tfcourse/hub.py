"""Model sources: TF Hub handles, the TFHUB_CACHE_DIR cache and local SavedModel directories.

`hub.KerasLayer` cannot be used inside Keras 3 models (a functional model fails with "A
KerasTensor cannot be used as input to a TensorFlow function"; Sequential refuses it), so
`HubModule` is a small Keras 3 layer of our own: it holds `hub.load(handle)`, exposes the module's
own variables as `keras.Variable`s (the same variables, not copies), and saves and loads them in
a fixed order, so it can be frozen or fine-tuned, survives a `.keras` round trip and exports.
`HubStreamModule` does the same for stream modules (MoViNet stream classifiers), which take and
return their states, and `stream_logits` runs one over a video a frame at a time.

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
    path = resolve_handle(handle)
    try:
        return hub.load(path)
    except (OSError, ValueError, tf.errors.OpError) as error:  # e.g. a saved_model.pb that does not parse
        raise UserError(f"Hub module {handle!r} cannot be loaded as a SavedModel: {str(error).splitlines()[0]}") from None


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


def _traced_calls(handle, module):
    functions = getattr(getattr(module, "__call__", None), "concrete_functions", [])
    if not functions:
        raise UserError(f"Hub module {handle!r} has no traced `__call__`: it is not a TF2 SavedModel module.")
    return functions


def _takes_training(function):
    args, kwargs = function.structured_input_signature
    return len(args) > 1 or "training" in kwargs


def _input_spec(handle, spec, input_key):
    """The spec of the one input the layer feeds: the module's input, or its dict entry `input_key`."""
    if input_key is None:
        if isinstance(spec, dict):
            raise UserError(
                f"Hub module {handle!r} takes a dict of inputs {sorted(spec)}: name the one the "
                "layer's input is with `input_key` (MoViNet classifiers: input_key='image')."
            )
        return spec
    if not isinstance(spec, dict) or input_key not in spec:
        raise UserError(f"Hub module {handle!r} has no input named {input_key!r}: it takes {spec}.")
    if len(spec) > 1:
        raise UserError(
            f"Hub module {handle!r} takes the inputs {sorted(spec)}, not {input_key!r} alone: a stream "
            "module (frames and states) runs through `HubStreamModule`."
        )
    return spec[input_key]


def _call_signature(handle, module, output_key, input_key=None):
    """-> (rank of the module's input, whether `__call__` takes a `training` argument)."""
    functions = _traced_calls(handle, module)
    args, _ = functions[0].structured_input_signature
    spec = _input_spec(handle, args[0], input_key)
    if output_key is None and len(tf.nest.flatten(functions[0].structured_outputs)) > 1:
        raise UserError(
            f"Hub module {handle!r} returns several outputs: choose one with `output_key` "
            "(a tuple index or a dict key)."
        )
    rank = spec.shape.rank if isinstance(spec, tf.TensorSpec) else None
    return rank, _takes_training(functions[0])


class _SavedModelLayer(keras.layers.Layer):
    """A Keras 3 layer over a loaded SavedModel: the module's variables as `keras.Variable`s (the same
    variables, with the trainable flags they were saved with), saved and loaded in a fixed order."""

    def __init__(self, handle, **kwargs):
        super().__init__(**kwargs)
        self.handle = handle
        self._module = load_module(handle)

    def _track_module_variables(self):
        variables, trainable_ids = module_variables(self._module)
        self.module_variables = [
            keras.Variable(v, name=_variable_name(v), trainable=id(v) in trainable_ids) for v in variables
        ]
        for variable in self.module_variables:  # Keras applied `trainable=` before they existed
            variable.trainable = variable.trainable and self.trainable
        self.built = True

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


@keras.saving.register_keras_serializable(package="tfcourse")
class HubModule(_SavedModelLayer):
    """A TF2 Hub SavedModel called inside a Keras 3 model.

    - Modules that take `training` (image feature vectors) always get `training=False`, so their
      batch norm statistics stay fixed whether the layer is frozen or fine-tuned.
    - Modules that take one example, such as YAMNet's 1-D waveform, are mapped over the batch:
      waveforms [batch, samples] give [batch, frames, ...].
    - `output_key` picks one output of a module that returns several: an index into a tuple (YAMNet
      returns scores, embeddings, log-mel spectrogram, so 1 is its embeddings) or a dict key.
    - `input_key` names the input of a module that takes a dict: the MoViNet base classifiers take
      `{"image": video}`, so `HubModule(handle, input_key="image")` maps video [batch, frames,
      height, width, 3] in [0, 1] to logits.
    """

    def __init__(self, handle, output_key=None, input_key=None, **kwargs):
        super().__init__(handle, **kwargs)
        self.output_key = output_key
        self.input_key = input_key
        self._example_rank, self._takes_training = _call_signature(handle, self._module, output_key, input_key)
        self._track_module_variables()

    def _run(self, inputs):
        if self.input_key is not None:
            inputs = {self.input_key: inputs}
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

    def get_config(self):
        return {**super().get_config(), "output_key": self.output_key, "input_key": self.input_key}


def _init_states_function(handle, module):
    """-> (function of the video's int32 shape giving the initial states, the states' names).

    Exported MoViNet stream modules carry it as the `init_states` signature (called with keyword
    arguments only); some modules have an `init_states` tf.function attribute instead.
    """
    signature = getattr(module, "signatures", {}).get("init_states")
    if signature is not None:
        _, kwargs = signature.structured_input_signature
        if len(kwargs) != 1:
            raise UserError(
                f"The `init_states` signature of hub module {handle!r} takes {sorted(kwargs)}, not one shape."
            )
        (shape_argument,) = kwargs
        return (lambda shape: signature(**{shape_argument: shape})), list(signature.structured_outputs)
    function = getattr(module, "init_states", None)
    traced = getattr(function, "concrete_functions", [])
    if not traced:
        raise UserError(
            f"Hub module {handle!r} has no `init_states` signature or function: it is not a stream "
            "module (MoViNet stream classifiers have one)."
        )
    return function, list(traced[0].structured_outputs)


@keras.saving.register_keras_serializable(package="tfcourse")
class HubStreamModule(_SavedModelLayer):
    """A TF Hub stream module, such as a MoViNet stream classifier, run a few frames at a time.

    A stream module keeps its memory of past frames in explicit states. `initial_states(video_shape)`
    gives them for a video of shape [batch, frames, height, width, 3] (names, shapes and dtypes are
    the module's own), and `layer(frames, states)` takes the next frames [batch, n, height, width, 3]
    and returns (logits, new states): after the last frame, the logits of the whole clip.
    `stream_logits(layer, video)` runs a whole video one frame at a time. The input that is not a
    state (MoViNet's "image") is the frames.
    """

    def __init__(self, handle, **kwargs):
        super().__init__(handle, **kwargs)
        self._init_states, state_names = _init_states_function(handle, self._module)
        function = _traced_calls(handle, self._module)[0]
        args, _ = function.structured_input_signature
        frame_keys = sorted(set(args[0]) - set(state_names)) if isinstance(args[0], dict) else []
        outputs = function.structured_outputs
        if len(frame_keys) != 1 or not (isinstance(outputs, (tuple, list)) and len(outputs) == 2):
            raise UserError(
                f"Hub module {handle!r} takes {args[0]} and returns {outputs}: a stream module takes a "
                f"dict of its states {sorted(state_names)} and one input of frames, and returns "
                "(logits, states)."
            )
        self._frames_key = frame_keys[0]
        self._takes_training = _takes_training(function)
        self._track_module_variables()

    def initial_states(self, video_shape):
        """-> {name: state} before the first frame of a video of shape [batch, frames, height, width, 3]."""
        return dict(self._init_states(tf.cast(video_shape, tf.int32)))

    def call(self, frames, states):
        inputs = {**states, self._frames_key: frames}
        outputs = self._module(inputs, training=False) if self._takes_training else self._module(inputs)
        logits, new_states = outputs
        return logits, dict(new_states)


def stream_logits(stream, video):
    """-> logits after each frame [batch, frames, classes]: `stream` (a HubStreamModule) fed `video`
    [batch, frames, height, width, 3] one frame at a time. Works eagerly and in a tf.function."""
    video = tf.convert_to_tensor(video, tf.float32)
    frames = tf.shape(video)[1]

    def step(t, states, logits):
        frame_logits, states = stream(video[:, t : t + 1], states)
        return t + 1, states, logits.write(t, frame_logits)

    states = stream.initial_states(tf.shape(video))
    loop_vars = (tf.constant(0), states, tf.TensorArray(tf.float32, size=frames))
    # In a graph the states returned may be less specific in shape than the initial ones.
    any_shape = {name: tf.TensorShape([None] * state.shape.rank) for name, state in states.items()}
    invariants = (tf.TensorShape([]), any_shape, tf.TensorShape(None))
    _, _, logits = tf.while_loop(lambda t, *_: t < frames, step, loop_vars, shape_invariants=invariants)
    return tf.transpose(logits.stack(), [1, 0, 2])
