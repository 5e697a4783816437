"""YAMNet (AudioSet, 521 classes) in Keras 3, implemented in the project.

The framing and constants are the published model's (tensorflow/models, research/audioset/yamnet,
params.py): 16 kHz mono; STFT window 25 ms (400 samples), hop 10 ms (160), FFT length 512,
periodic Hann window; magnitude spectrum; 64 mel bands from 125 to 7500 Hz; log(mel + 0.001);
patches of 96 frames (0.96 s) every 48 frames (0.48 s); a MobileNetV1-style network of 14 layers
(batch norm with center only, epsilon 1e-4); 1024-d embeddings and 521 sigmoid scores per patch.

`tf.signal.stft` needs TFLite's Flex delegate, so the front end is a DFT done as two matrix
multiplies: the whole waveform-to-scores model converts to TFLite with builtin ops only.

Weights: `load_tflite_weights` (a YAMNet TFLite file, dequantized) or `load_hub_weights` (the TF
Hub SavedModel, a handle or a local folder).
"""

import os

import numpy as np
import keras
import tensorflow as tf

from tfcourse import UserError

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400
HOP_SAMPLES = 160
FFT_LENGTH = 512
MEL_BANDS = 64
MEL_MIN_HZ, MEL_MAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96
PATCH_HOP_FRAMES = 48
NUM_CLASSES = 521
EMBEDDING_SIZE = 1024
BATCH_NORM_EPSILON = 1e-4
# (stride, filters) of layer1 (a full conv) and layers 2-14 (depthwise + pointwise), all 3x3.
LAYERS = [(2, 32), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
          (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]
# The shortest waveform that makes one patch: 96 frames of 10 ms plus the 15 ms a window overhangs.
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES  # 15600
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP_SAMPLES  # 7680


def pad_waveform(waveform):
    """Zero-pads to at least one patch, then up to a whole number of patch hops (as the published model)."""
    length = tf.shape(waveform)[0]
    padded_length = tf.maximum(length, PATCH_SAMPLES)
    hops = (padded_length - PATCH_SAMPLES + PATCH_HOP_SAMPLES - 1) // PATCH_HOP_SAMPLES
    return tf.pad(waveform, [[0, PATCH_SAMPLES + hops * PATCH_HOP_SAMPLES - length]])


def dft_matrices():
    """[400, 257] real and imaginary DFT matrices with the periodic Hann window folded in.

    A frame zero-padded to 512 samples has X[k] = sum_n w[n] x[n] exp(-2 pi i k n / 512) over its
    400 samples, so the padding never has to be materialised.
    """
    n = np.arange(WINDOW_SAMPLES)[:, None]
    k = np.arange(FFT_LENGTH // 2 + 1)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW_SAMPLES) / WINDOW_SAMPLES)  # periodic Hann
    angle = 2 * np.pi * n * k / FFT_LENGTH
    return (window[:, None] * np.cos(angle)).astype("float32"), (-window[:, None] * np.sin(angle)).astype("float32")


@keras.saving.register_keras_serializable(package="tfcourse")
class LogMelSpectrogram(keras.layers.Layer):
    """Waveform [samples] at 16 kHz -> log-mel spectrogram [frames, 64], with TFLite builtin ops only."""

    def build(self, input_shape):
        self.dft_real, self.dft_imaginary = (tf.constant(m) for m in dft_matrices())
        self.mel_matrix = tf.signal.linear_to_mel_weight_matrix(
            MEL_BANDS, FFT_LENGTH // 2 + 1, SAMPLE_RATE, MEL_MIN_HZ, MEL_MAX_HZ
        )

    def call(self, waveform):
        frames = tf.signal.frame(waveform, WINDOW_SAMPLES, HOP_SAMPLES)
        magnitude = tf.sqrt(tf.square(frames @ self.dft_real) + tf.square(frames @ self.dft_imaginary))
        return tf.math.log(magnitude @ self.mel_matrix + LOG_OFFSET)


def yamnet_network(name="yamnet_network"):
    """Patches [batch, 96, 64] -> (scores [batch, 521], embeddings [batch, 1024]). Layer names follow the
    published model's with '/' as '_' (layer1_conv, layer2_depthwise_conv_bn, ...; its `dense` is `logits`)."""
    patches = keras.Input((PATCH_FRAMES, MEL_BANDS), name="patches")
    x = keras.layers.Reshape((PATCH_FRAMES, MEL_BANDS, 1))(patches)
    for i, (stride, filters) in enumerate(LAYERS, start=1):
        convs = [keras.layers.Conv2D(filters, 3, stride, "same", use_bias=False, name=f"layer{i}_conv")] if i == 1 else [
            keras.layers.DepthwiseConv2D(3, stride, "same", use_bias=False, name=f"layer{i}_depthwise_conv"),
            keras.layers.Conv2D(filters, 1, 1, "same", use_bias=False, name=f"layer{i}_pointwise_conv"),
        ]
        for conv in convs:
            x = conv(x)
            x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, scale=False, name=conv.name + "_bn")(x)
            x = keras.layers.ReLU(name=conv.name + "_relu")(x)
    embeddings = keras.layers.GlobalAveragePooling2D(name="embeddings")(x)
    scores = keras.layers.Dense(NUM_CLASSES, activation="sigmoid", name="logits")(embeddings)
    return keras.Model(patches, [scores, embeddings], name=name)


@keras.saving.register_keras_serializable(package="tfcourse")
class YAMNet(keras.Model):
    """Waveform [samples] (16 kHz mono, any length) -> scores [patches, 521], embeddings [patches, 1024],
    log-mel spectrogram [frames, 64]: the published model's outputs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.spectrogram = LogMelSpectrogram(name="log_mel_spectrogram")
        self.network = yamnet_network()

    def call(self, waveform):
        log_mel = self.spectrogram(pad_waveform(waveform))
        patches = tf.signal.frame(log_mel, PATCH_FRAMES, PATCH_HOP_FRAMES, axis=0)
        scores, embeddings = self.network(patches)
        return scores, embeddings, log_mel

    def build(self, input_shape=None):
        self.spectrogram.build((None,))
        self.built = True


def embedding_head(num_classes, hidden_units=256, dropout=0.3):
    """A classifier on YAMNet embeddings [batch, 1024] -> class probabilities."""
    embeddings = keras.Input((EMBEDDING_SIZE,), name="embeddings")
    x = keras.layers.Dense(hidden_units, activation="relu")(embeddings)
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(embeddings, keras.layers.Dense(num_classes, activation="softmax")(x), name="head")


HUB_HANDLE = "https://tfhub.dev/google/yamnet/1"


def load_pretrained(weights, hub_handle=""):
    """-> (YAMNet, where its weights came from, whether pretrained): `weights` is hub | random | a .tflite path."""
    from tfcourse.hub import load_module
    from tfcourse.models.tflite_import import open_interpreter

    model = YAMNet()
    model.build()
    if weights == "hub":
        handle = hub_handle or HUB_HANDLE
        load_hub_weights(model.network, load_module(handle))
        return model, f"hub:{handle}", True
    if weights.endswith(".tflite"):
        if not os.path.isfile(weights):
            raise UserError(f"model.weights: the YAMNet TFLite file {weights!r} does not exist.")
        load_tflite_weights(model.network, open_interpreter(weights))
        return model, f"tflite:{weights}", True
    if weights == "random":
        return model, "random", False
    raise UserError(f"model.weights {weights!r}: use 'hub', 'random' or a path to a YAMNet .tflite file.")


def _conv_layers(network):
    return [l for l in network.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]


def load_tflite_weights(network, interpreter):
    """Copies a YAMNet TFLite model's dequantized weights into `yamnet_network()`.

    Batch norm is folded into the file's conv weights and biases, so each batch norm becomes an
    identity plus that bias (mean 0, variance 1 - epsilon): exact in inference mode only.
    """
    from tfcourse.models.tflite_import import read_tflite_ops

    ops = read_tflite_ops(interpreter, ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"))
    convolutions = [(op, inputs) for op, inputs in ops if op["op_name"] != "FULLY_CONNECTED"]
    layers = _conv_layers(network)
    if len(convolutions) != len(layers) or ops[-1][0]["op_name"] != "FULLY_CONNECTED":
        raise UserError(f"The TFLite model has {len(convolutions)} convolutions; YAMNet has {len(layers)}.")
    for layer, (op, (_, kernel, bias)) in zip(layers, convolutions):
        # TFLite stores conv kernels [out, h, w, in] and depthwise ones [1, h, w, channels].
        kernel = kernel[0][..., None] if op["op_name"] == "DEPTHWISE_CONV_2D" else kernel.transpose(1, 2, 3, 0)
        layer.kernel.assign(kernel)
        network.get_layer(layer.name + "_bn").set_weights(
            [bias, np.zeros_like(bias), np.full_like(bias, 1 - BATCH_NORM_EPSILON)]
        )
    _, (_, logits_kernel, logits_bias) = ops[-1]
    network.get_layer("logits").set_weights([logits_kernel.T, logits_bias])


def load_hub_weights(network, module):
    """Copies the variables of the TF Hub YAMNet module (`hub.load(handle)`) into `yamnet_network()`.

    Hub variables are named like `layer2/depthwise_conv/bn/moving_mean:0` and `dense/kernel:0`.
    """
    from tfcourse.hub import module_variables

    weights = {w.path: w for w in network.weights}
    unmatched = []
    for variable in module_variables(module)[0]:
        layer, _, name = variable.name.split(":")[0].rpartition("/")
        path = ("logits" if layer == "dense" else layer.replace("/", "_")) + "/" + name
        if path in weights:
            weights.pop(path).assign(variable.numpy())
        else:
            unmatched.append(variable.name)
    if unmatched or weights:
        raise UserError(
            f"The hub module is not YAMNet: its variables {unmatched[:3]} have no place in the model and "
            f"the model's {list(weights)[:3]} got no value."
        )


def quantize_like_hybrid_kernel(x):
    """What a TFLite hybrid (int8-weight) kernel does to its float input: symmetric int8, scale max|x| / 127."""
    scale = np.abs(x).max() / 127
    return np.round(x / scale) * scale if scale > 0 else x


def tflite_layer_errors(network, interpreter, patch_waveform, emulate_hybrid_inputs=False):
    """Relative error of each imported layer fed the TFLite model's own input for it.

    Runs the TFLite model (opened with `keep_intermediates=True`) on one patch of waveform
    [15600], then feeds each conv block (conv, batch norm, ReLU) and the classifier the very
    tensor TFLite fed its op, and returns {layer: ||keras - tflite|| / ||tflite||}. With
    `emulate_hybrid_inputs`, layers whose TFLite kernel has int8 weights get that input
    quantized as the kernel quantizes it: what remains is the error of the imported weights.
    """
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.asarray(patch_waveform, "float32")[None])
    interpreter.invoke()
    ops = interpreter._get_ops_details()
    convolutions = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    classifier = next(op for op in ops if op["op_name"] == "FULLY_CONNECTED" and op["index"] > convolutions[-1]["index"])
    sigmoid = next(op for op in ops if op["op_name"] == "LOGISTIC")
    blocks = [(l.name, [l, network.get_layer(l.name + "_bn"), network.get_layer(l.name + "_relu")], op,
               op["outputs"][0]) for l, op in zip(_conv_layers(network), convolutions)]
    blocks.append(("logits", [network.get_layer("logits")], classifier, sigmoid["outputs"][0]))
    int8 = {t["index"] for t in interpreter.get_tensor_details() if t["dtype"] == np.int8}
    errors = {}
    for name, layers, op, output_index in blocks:
        x = interpreter.get_tensor(op["inputs"][0])
        if emulate_hybrid_inputs and op["inputs"][1] in int8:
            x = quantize_like_hybrid_kernel(x)
        for layer in layers:
            x = layer(x, training=False) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
        expected = interpreter.get_tensor(output_index)
        errors[name] = float(np.linalg.norm(np.asarray(x) - expected) / np.linalg.norm(expected))
    return errors
