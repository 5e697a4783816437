"""MoViNet (Kondratyuk et al. 2021) in Keras 3, implemented in the project: A0, and tiny specs for tests.

The blocks, layer order, initialisers and batch norm settings follow TF Model Garden's
`official/projects/movinet` with conv_type "3d", se_type "3d", swish and sigmoid gating: a 3D stem,
then mobile inverted bottlenecks (1x1x1 expansion, depthwise 3D convolution, squeeze-excite,
1x1x1 projection, ReZero scale, skip), a 1x1x1 projection head and global average pooling.

One spec builds three forms:
- the base form (`causal=False`): 3D convolutions padded on both sides in time; squeeze-excite and
  the head pool average over the whole clip;
- the causal form (`causal=True`): convolutions padded only on the past side; squeeze-excite
  averages cumulatively over the frames seen so far;
- the stream form (`movinet_stream_backbone`): the causal form with its memory as explicit inputs
  and outputs: each temporal convolution's last k-1 input frames, each pool's running sum and the
  frame count. Fed one frame at a time, its last output equals the causal form on the whole clip.

Keras has no depthwise 3D convolution, TF's grouped Conv3D runs on CPU only under XLA, and TFLite's
CONV_3D has no groups; so `DepthwiseConv3D` sums 2D depthwise convolutions over the kernel's time
taps, which every backend and TFLite run with builtin ops. Spatial pooling in the skip path is a 2D
pool over the frames for the same reason (TFLite's 3D pools are custom ops).
"""

import math
import os
import re

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError

# Model Garden's checkpoints (official/projects/movinet/README.md). The base one is this module's
# base form; the current stream one is built with (2+1)D convolutions and hard swish, another
# architecture, so the 3D causal one is its "_legacy" file.
MODEL_GARDEN_URL = "https://storage.googleapis.com/tf_model_garden/vision/movinet/movinet_{}.tar.gz"
MODEL_GARDEN_CHECKPOINTS = {name: MODEL_GARDEN_URL.format(file) for name, file in
                            [("a0_base", "a0_base"), ("a0_stream", "a0_stream_legacy")]}
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99
SE_RATIO = 0.25
INPUT_SIZE = 172

# (filters, kernel, strides) of the stem; per block (base_filters, [(expand_filters, kernel, strides)]);
# (project_filters, head_filters) of the head. Model Garden's BLOCK_SPECS["a0"].
K13, K15, K33, K53 = (1, 3, 3), (1, 5, 5), (3, 3, 3), (5, 3, 3)
S11, S12 = (1, 1, 1), (1, 2, 2)
SPECS = {
    "a0": {
        "stem": (8, K13, S12),
        "blocks": [
            (8, [(24, K15, S12)]),
            (32, [(80, K33, S12), (80, K33, S11), (80, K33, S11)]),
            (56, [(184, K53, S12), (112, K33, S11), (184, K33, S11)]),
            (56, [(184, K53, S11), (184, K33, S11), (184, K33, S11), (184, K33, S11)]),
            (104, [(384, K53, S12), (280, K15, S11), (280, K15, S11), (344, K15, S11)]),
        ],
        "head": (480, 2048),
    },
    # The same kinds of layers at a fraction of the size, for tests and smoke runs.
    "tiny": {
        "stem": (8, K13, S12),
        "blocks": [
            (8, [(16, K15, S12)]),
            (16, [(32, K33, S12), (32, K33, S11)]),
            (24, [(48, K53, S12), (48, K15, S11)]),
        ],
        "head": (64, 128),
    },
}


def _spec(name):
    if name not in SPECS:
        raise UserError(f"MoViNet spec {name!r} is unknown; known specs: {sorted(SPECS)}.")
    return SPECS[name]


def make_divisible(value, divisor=8):
    """Model Garden's channel rounding (nn_layers.make_divisible)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return int(new_value + divisor if new_value < 0.9 * value else new_value)


@keras.saving.register_keras_serializable(package="tfcourse")
class DepthwiseConv3D(keras.layers.Layer):
    """A depthwise 3D convolution: "same" spatial padding; in time "same", "causal" or "valid".

    "valid" is for the stream form, whose input already starts with the buffered past frames. The
    kernel has Model Garden's grouped Conv3D shape [t, h, w, 1, channels].
    """

    def __init__(self, kernel_size, strides=(1, 1, 1), temporal_padding="same", **kwargs):
        super().__init__(**kwargs)
        if strides[0] != 1 or strides[1] != strides[2]:
            raise ValueError(f"DepthwiseConv3D supports strides (1, s, s), got {strides}.")
        if temporal_padding not in ("same", "causal", "valid"):
            raise ValueError(f"temporal_padding must be 'same', 'causal' or 'valid', got {temporal_padding!r}.")
        self.kernel_size = tuple(kernel_size)
        self.strides = tuple(strides)
        self.temporal_padding = temporal_padding

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, 1, input_shape[-1]), initializer="he_normal"
        )

    def call(self, inputs):
        taps = self.kernel_size[0]
        if self.temporal_padding == "same":
            inputs = tf.pad(inputs, [[0, 0], [(taps - 1) // 2, taps // 2], [0, 0], [0, 0], [0, 0]])
        elif self.temporal_padding == "causal":
            inputs = tf.pad(inputs, [[0, 0], [taps - 1, 0], [0, 0], [0, 0], [0, 0]])
        shape = tf.shape(inputs)
        frames = shape[1] - taps + 1
        channels = inputs.shape[-1]
        stride = self.strides[1]
        outputs = 0.0
        for tap in range(taps):
            frames_at_tap = tf.reshape(inputs[:, tap:tap + frames], [-1, shape[2], shape[3], channels])
            kernel = tf.transpose(self.kernel[tap], [0, 1, 3, 2])  # [h, w, channels, 1]
            outputs += tf.nn.depthwise_conv2d(frames_at_tap, kernel, [1, stride, stride, 1], "SAME")
        out_shape = tf.shape(outputs)
        return tf.reshape(outputs, [shape[0], frames, out_shape[1], out_shape[2], channels])

    def compute_output_shape(self, input_shape):
        batch, frames, height, width, channels = input_shape
        if frames is not None and self.temporal_padding == "valid":
            frames -= self.kernel_size[0] - 1
        stride = self.strides[1]
        height, width = [None if d is None else math.ceil(d / stride) for d in (height, width)]
        return (batch, frames, height, width, channels)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "temporal_padding": self.temporal_padding}


@keras.saving.register_keras_serializable(package="tfcourse")
class FramewiseAveragePool(keras.layers.Layer):
    """3x3 average pooling with stride 2 over each frame ("same", padding not counted), as the skip path's
    AveragePooling3D((1, 3, 3), (1, 2, 2)) but with TFLite builtin ops."""

    def call(self, inputs):
        shape = tf.shape(inputs)
        frames = tf.reshape(inputs, [-1, shape[2], shape[3], inputs.shape[-1]])
        pooled = tf.nn.avg_pool2d(frames, 3, 2, "SAME")
        pooled_shape = tf.shape(pooled)
        return tf.reshape(pooled, [shape[0], shape[1], pooled_shape[1], pooled_shape[2], inputs.shape[-1]])

    def compute_output_shape(self, input_shape):
        batch, frames, height, width, channels = input_shape
        height, width = [None if d is None else math.ceil(d / 2) for d in (height, width)]
        return (batch, frames, height, width, channels)


@keras.saving.register_keras_serializable(package="tfcourse")
class CumulativeAveragePool(keras.layers.Layer):
    """Per frame, the mean over all pixels of this and every earlier frame: [b, t, 1, 1, c].

    Called on (frames, running_sum, frame_count) it continues a stream and also returns the new
    running sum; without them it starts from zero (the causal form's squeeze-excite).
    """

    def call(self, inputs, running_sum=None, frame_count=None):
        frame_means = tf.reduce_mean(inputs, axis=[2, 3], keepdims=True)
        sums = tf.cumsum(frame_means, axis=1)
        frames = tf.shape(inputs)[1]
        divisors = tf.reshape(tf.cast(tf.range(1, frames + 1), inputs.dtype), [1, -1, 1, 1, 1])
        if running_sum is None:
            return sums / divisors
        sums += running_sum
        divisors += tf.reshape(frame_count, [-1, 1, 1, 1, 1])
        return sums / divisors, sums[:, -1:]

    def compute_output_spec(self, inputs, running_sum=None, frame_count=None):
        b, t, _, _, c = inputs.shape
        means = keras.KerasTensor((b, t, 1, 1, c), inputs.dtype)
        return means if running_sum is None else (means, keras.KerasTensor((b, 1, 1, 1, c), inputs.dtype))


@keras.saving.register_keras_serializable(package="tfcourse")
class RunningAveragePool(keras.layers.Layer):
    """The stream form's head pool: the mean over all pixels of every frame so far, [b, c], and the new running sum."""

    def call(self, inputs, running_sum, frame_count):
        frame_means = tf.reduce_mean(inputs, axis=[2, 3], keepdims=True)
        sums = running_sum + tf.reduce_sum(frame_means, axis=1, keepdims=True)
        frames = tf.reshape(frame_count, [-1, 1]) + tf.cast(tf.shape(inputs)[1], inputs.dtype)
        return tf.reshape(sums, [-1, inputs.shape[-1]]) / frames, sums

    def compute_output_spec(self, inputs, running_sum, frame_count):
        b, _, _, _, c = inputs.shape
        return keras.KerasTensor((b, c), inputs.dtype), keras.KerasTensor((b, 1, 1, 1, c), inputs.dtype)


def _conv(filters, name, activation=None, use_bias=False):
    return keras.layers.Conv3D(filters, 1, use_bias=use_bias, activation=activation,
                               kernel_initializer="he_normal", name=name)


class _Graph:
    """Builds one MoViNet graph. With `states` (the stream form) it reads and writes them by name."""

    def __init__(self, causal, states=None, batch_norm_momentum=BATCH_NORM_MOMENTUM):
        self.causal = causal
        self.states = states
        self.new_states = {}
        self.batch_norm_momentum = batch_norm_momentum

    def batch_norm(self, name):
        return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=self.batch_norm_momentum, name=name)

    def conv_bn(self, x, filters, name, activation="swish"):
        x = _conv(filters, f"{name}_conv3d")(x)
        x = self.batch_norm(f"{name}_bn")(x)
        return keras.layers.Activation(activation, name=f"{name}_act")(x) if activation else x

    def stem(self, x, filters, kernel, strides):
        x = keras.layers.Conv3D(filters, kernel, strides=strides, padding="same", use_bias=False,
                                kernel_initializer="he_normal", name="stem_conv3d")(x)
        x = self.batch_norm("stem_bn")(x)
        return keras.layers.Activation("swish", name="stem_act")(x)

    def block(self, x, name, out_filters, expand_filters, kernel, strides):
        inputs = x
        x = self.conv_bn(x, expand_filters, f"{name}_expansion")
        x = self.depthwise(x, name, kernel, strides)
        x = self.batch_norm(f"{name}_feature_bn")(x)
        x = keras.layers.Activation("swish", name=f"{name}_feature_act")(x)
        x = self.squeeze_excite(x, name, make_divisible(SE_RATIO * expand_filters))
        x = self.conv_bn(x, out_filters, f"{name}_projection", activation=None)
        x = Scale(name=f"{name}_rezero")(x)
        downsample = strides[1] > 1
        if downsample or inputs.shape[-1] != out_filters:
            if downsample:
                inputs = FramewiseAveragePool(name=f"{name}_skip_pool")(inputs)
            inputs = self.conv_bn(inputs, out_filters, f"{name}_skip_project", activation=None)
        return keras.layers.Add(name=f"{name}_add")([x, inputs])

    def depthwise(self, x, name, kernel, strides):
        layer_name = f"{name}_feature_conv3d"
        if self.states is None or kernel[0] == 1:
            padding = "causal" if self.causal else "same"
            return DepthwiseConv3D(kernel, strides, padding, name=layer_name)(x)
        buffer_name = f"state_{name}_stream_buffer"
        x = keras.layers.Concatenate(axis=1, name=f"{name}_stream_concat")([self.states[buffer_name], x])
        self.new_states[buffer_name] = keras.layers.Cropping3D(((x.shape[1] - kernel[0] + 1, 0), (0, 0), (0, 0)),
                                                               name=f"{name}_stream_keep")(x)
        return DepthwiseConv3D(kernel, strides, "valid", name=layer_name)(x)

    def squeeze_excite(self, x, name, hidden_filters):
        if not self.causal:
            pooled = keras.layers.GlobalAveragePooling3D(keepdims=True, name=f"{name}_se_pool")(x)
        elif self.states is None:
            pooled = CumulativeAveragePool(name=f"{name}_se_pool")(x)
        else:
            buffer_name = f"state_{name}_pool_buffer"
            pooled, self.new_states[buffer_name] = CumulativeAveragePool(name=f"{name}_se_pool")(
                x, self.states[buffer_name], self.states["state_frame_count"])
        gate = _conv(hidden_filters, f"{name}_se_reduce", activation="swish", use_bias=True)(pooled)
        gate = _conv(x.shape[-1], f"{name}_se_expand", activation="sigmoid", use_bias=True)(gate)
        return keras.layers.Multiply(name=f"{name}_se_gate")([x, gate])

    def head(self, x, project_filters):
        x = self.conv_bn(x, project_filters, "head_project")
        if self.states is None:
            return keras.layers.GlobalAveragePooling3D(name="head_pool")(x)
        features, self.new_states["state_head_pool_buffer"] = RunningAveragePool(name="head_pool")(
            x, self.states["state_head_pool_buffer"], self.states["state_frame_count"])
        return features

    def backbone(self, video, spec):
        x = self.stem(video, *spec["stem"])
        for block_index, (out_filters, layers) in enumerate(spec["blocks"]):
            for layer_index, (expand_filters, kernel, strides) in enumerate(layers):
                x = self.block(x, f"block{block_index}_layer{layer_index}", out_filters, expand_filters, kernel, strides)
        return self.head(x, spec["head"][0])


@keras.saving.register_keras_serializable(package="tfcourse")
class Scale(keras.layers.Layer):
    """A learned scalar, initialised to zero (ReZero), on each block's residual branch."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="zeros")

    def call(self, inputs):
        return inputs * self.scale


def movinet_backbone(spec="a0", causal=False, frames=None, size=None, batch_norm_momentum=BATCH_NORM_MOMENTUM):
    """The clip form: video [batch, frames, size, size, 3] in [0, 1] -> pooled features [batch, project_filters].

    Model Garden's batch norm momentum is 0.99; a network trained from random weights on a small
    set does better with 0.9, whose moving statistics keep up within an epoch.
    """
    video = keras.Input((frames, size, size, 3), name="image")
    features = _Graph(causal, batch_norm_momentum=batch_norm_momentum).backbone(video, _spec(spec))
    return keras.Model(video, features, name=f"movinet_{spec}_{'causal' if causal else 'base'}")


def stream_state_shapes(spec="a0", size=INPUT_SIZE):
    """{state name: shape without batch} of the stream form for square frames of `size` pixels."""
    spec = _spec(spec)
    shapes = {"state_frame_count": (1,)}
    resolution = math.ceil(size / spec["stem"][2][1])
    for block_index, (_, layers) in enumerate(spec["blocks"]):
        for layer_index, (expand_filters, kernel, strides) in enumerate(layers):
            name = f"state_block{block_index}_layer{layer_index}"
            if kernel[0] > 1:
                shapes[f"{name}_stream_buffer"] = (kernel[0] - 1, resolution, resolution, expand_filters)
            shapes[f"{name}_pool_buffer"] = (1, 1, 1, expand_filters)
            resolution = math.ceil(resolution / strides[1])
    shapes["state_head_pool_buffer"] = (1, 1, 1, spec["head"][0])
    return shapes


def movinet_stream_backbone(spec="a0", size=INPUT_SIZE, frames_per_step=1):
    """The stream form: {"image": [batch, frames_per_step, size, size, 3], **states} -> {"features", **new states}.

    Start from `initial_states`; after the last frame, "features" equal the causal clip form's.
    """
    states = {name: keras.Input(shape, name=name) for name, shape in stream_state_shapes(spec, size).items()}
    image = keras.Input((frames_per_step, size, size, 3), name="image")
    graph = _Graph(causal=True, states=states)
    features = graph.backbone(image, _spec(spec))
    graph.new_states["state_frame_count"] = keras.layers.Rescaling(
        1.0, offset=float(frames_per_step), name="frame_count_next")(states["state_frame_count"])
    return keras.Model({"image": image, **states}, {"features": features, **graph.new_states},
                       name=f"movinet_{spec}_stream")


def copy_backbone_weights(source, target):
    """Copies weights between two forms of the same spec (clip <-> stream), checking every name and shape."""
    source_weights = {w.path: w for w in source.weights}
    target_paths = [w.path for w in target.weights]
    if sorted(source_weights) != sorted(target_paths):
        missing = sorted(set(target_paths) ^ set(source_weights))[:5]
        raise ValueError(f"{source.name} and {target.name} are different MoViNets (weights differ: {missing}).")
    for weight, path in zip(target.weights, target_paths):
        weight.assign(source_weights[path])


def movinet_classifier(backbone, num_classes, head_filters, dropout=0.2):
    """Video [batch, frames, size, size, 3] in [0, 1] -> class probabilities, Model Garden's classifier head
    (a `head_filters` swish layer, dropout, the classes) on a clip-form backbone, which is nested as one layer."""
    video = keras.Input(backbone.input.shape[1:], name="image")
    x = backbone(video)
    x = keras.layers.Dense(head_filters, activation="swish", name="head_dense")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                       kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)
    return keras.Model(video, probabilities, name="movinet_classifier")


def stream_classifier(classifier, spec, size, frames_per_step=1):
    """The stream form of a causal `movinet_classifier`: {"image", **states} -> {"probabilities", **new states}.

    Its backbone weights are copied from the classifier; the head layers are the classifier's own.
    """
    backbone = classifier.layers[1]
    if not backbone.name.endswith("_causal"):
        raise ValueError(f"Only a causal MoViNet streams; {backbone.name} is not causal.")
    stream = movinet_stream_backbone(spec, size, frames_per_step)
    copy_backbone_weights(backbone, stream)
    outputs = dict(stream.output)
    x = outputs.pop("features")
    for name in ("head_dense", "head_dropout", "probabilities"):
        x = classifier.get_layer(name)(x)
    return keras.Model(stream.input, {"probabilities": x, **outputs}, name="movinet_stream_classifier")


def initial_states(stream_model, batch_size=1):
    """Zeros for every state of a stream-form model: the stream before its first frame."""
    return {name: tf.zeros((batch_size, *spec.shape[1:])) for name, spec in stream_model.input.items() if name != "image"}


def stream_outputs(stream_model, video, output="probabilities"):
    """Runs a stream-form model over video [batch, frames, ...] from its initial states, a step at a time.

    Returns that output after every step: [batch, steps, ...]. The last step's equals the causal
    clip form's output on the whole video.
    """
    step = stream_model.input["image"].shape[1]
    if video.shape[1] % step:
        raise ValueError(f"The video's {video.shape[1]} frames are not a whole number of {step}-frame steps.")
    run = tf.function(lambda inputs: stream_model(inputs, training=False), reduce_retracing=True)
    states = initial_states(stream_model, video.shape[0])
    outputs = []
    for start in range(0, video.shape[1], step):
        result = run({"image": tf.convert_to_tensor(video[:, start:start + step], tf.float32), **states})
        states = {name: value for name, value in result.items() if name in states}
        outputs.append(result[output].numpy())
    return np.stack(outputs, axis=1)


# ## Model Garden checkpoints
# A checkpoint saved as `tf.train.Checkpoint(model=MovinetClassifier(...))` holds the backbone
# under model/layer_with_weights-0/layer_with_weights-N/ (N: the stem, each block in order, the
# head) with Model Garden's attribute names, which map one to one onto this module's layers.
_MODEL_GARDEN_PARTS = {
    "_stem/_conv": "conv3d", "_stem/_batch_norm": "bn",
    "_expansion/_conv": "expansion_conv3d", "_expansion/_batch_norm": "expansion_bn",
    "_feature/_conv": "feature_conv3d", "_feature/_batch_norm": "feature_bn",
    "_attention/_se_reduce/_conv": "se_reduce", "_attention/_se_expand/_conv": "se_expand",
    "_projection/_conv": "projection_conv3d", "_projection/_batch_norm": "projection_bn",
    "_skip/_projection/_conv": "skip_project_conv3d", "_skip/_projection/_batch_norm": "skip_project_bn",
    "_mobile_bottleneck/_rezero": "rezero",
    "_project/_conv": "project_conv3d", "_project/_batch_norm": "project_bn",
}


def model_garden_checkpoint_path(checkpoint):
    """A checkpoint prefix from a URL of a Model Garden .tar.gz (downloaded once), a folder holding one
    checkpoint (at any depth, as the archives unpack), or a prefix."""
    if checkpoint.startswith(("http://", "https://")):
        name = os.path.basename(checkpoint).removesuffix(".tar.gz")
        checkpoint = keras.utils.get_file(name, checkpoint, extract=True, cache_subdir="movinet")
    prefix = checkpoint
    if os.path.isdir(checkpoint):
        indexes = sorted(os.path.join(d, f) for d, _, files in os.walk(checkpoint) for f in files if f.endswith(".index"))
        if len(indexes) > 1:
            raise UserError(f"model.checkpoint = {checkpoint!r} holds {len(indexes)} checkpoints; give one prefix, "
                            f"e.g. {indexes[-1].removesuffix('.index')!r}.")
        prefix = indexes[0].removesuffix(".index") if indexes else checkpoint
    if not tf.io.gfile.exists(prefix + ".index"):
        raise UserError(f"model.checkpoint = {checkpoint!r} is not a TF checkpoint (no .index file found).")
    return prefix


def load_model_garden_checkpoint(backbone, checkpoint):
    """Loads a Model Garden MoViNet checkpoint (conv_type "3d", se_type "3d") into a clip-form backbone.

    Every weight of the backbone must be in the checkpoint with the same shape; the classifier head
    is not loaded (a new task has its own classes). Returns the number of tensors loaded.
    """
    prefix = model_garden_checkpoint_path(checkpoint)
    reader = tf.train.load_checkpoint(prefix)
    layers = ["stem"] + [layer.name.removesuffix("_rezero") for layer in backbone.layers if layer.name.endswith("_rezero")]
    layers.append("head")
    found = {}
    pattern = re.compile(r"^model/layer_with_weights-0/layer_with_weights-(\d+)/(.+)/([^/]+)/\.ATTRIBUTES/VARIABLE_VALUE$")
    for key in reader.get_variable_to_shape_map():
        match = pattern.match(key)
        if match and match.group(2) in _MODEL_GARDEN_PARTS and int(match.group(1)) < len(layers):
            path = f"{layers[int(match.group(1))]}_{_MODEL_GARDEN_PARTS[match.group(2)]}/{match.group(3)}"
            found[path] = key
    for weight in backbone.weights:
        key = found.get(weight.path)
        if key is None:
            raise UserError(f"Checkpoint {prefix!r} has no weight for {weight.path} of {backbone.name}: it is not a "
                            "Model Garden MoViNet of the same spec with conv_type '3d' and se_type '3d'.")
        value = reader.get_tensor(key)
        if value.shape != tuple(weight.shape):
            raise UserError(f"Checkpoint {prefix!r} holds {key} with shape {value.shape}, but {weight.path} of "
                            f"{backbone.name} has {tuple(weight.shape)}: another MoViNet spec or conv_type.")
        weight.assign(value)
    return len(backbone.weights)
