"""Imports the weights of a quantized TFLite MobileNetV2 classifier into `keras.applications`.

Keras has no TFLite importer, and a machine without a network has no ImageNet `.h5` weights,
but a TFLite classifier file may be at hand (`${TFCOURSE_ASSETS}/models/imagenet/`). The TF-slim
quantized MobileNetV2 stores, per convolution, uint8 weights with one scale and zero point per
tensor, and an int32 bias with scale = input scale x weight scale; its batch norm is folded into
those weights and biases. So each Keras convolution gets the dequantized kernel, and the batch
norm after it becomes an identity plus the folded bias (mean 0, variance 1, gamma
sqrt(1 + epsilon), beta = bias). That is exact only in inference mode: keep these batch norm
layers frozen when fine-tuning.
"""

import numpy as np
import keras
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfcourse import UserError


def _dequantize(tensor_detail, values):
    """scale * (q - zero_point), per tensor or per channel along the quantized dimension."""
    parameters = tensor_detail["quantization_parameters"]
    scales, zero_points = parameters["scales"], parameters["zero_points"]
    if scales.size == 0:
        return values.astype("float32")
    shape = [1] * values.ndim
    if scales.size > 1:
        shape[parameters["quantized_dimension"]] = scales.size
    return (scales.reshape(shape) * (values.astype("float32") - zero_points.reshape(shape))).astype("float32")


def open_interpreter(path, keep_intermediates=False):
    """A LiteRT interpreter without default delegates (XNNPACK would fuse ops and hide tensors)."""
    try:
        interpreter = Interpreter(
            model_path=path,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=keep_intermediates,
        )
    except (ValueError, RuntimeError) as error:
        raise UserError(f"{path!r} is not a readable TFLite model: {error}") from None
    interpreter.allocate_tensors()
    return interpreter


def op_names(interpreter):
    """The set of op names a TFLite model runs (a Flex op would show as "DELEGATE" or a custom op name)."""
    return {op["op_name"] for op in interpreter._get_ops_details()}  # the public API lists tensors but not the graph


def read_tflite_ops(interpreter, op_names):
    """[(op, [dequantized constant inputs, None for activations])] of the ops named, in execution order.

    A constant may be stored as int8 behind a DEQUANTIZE op (a "hybrid" model): it is read from there.
    """
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the public API lists tensors but not the graph
    dequantized_from = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"}
    computed = {i for op in ops for i in op["outputs"]} | {d["index"] for d in interpreter.get_input_details()}

    def constant(index):
        index = dequantized_from.get(index, index)
        if index in computed:
            return None
        return _dequantize(details[index], interpreter.get_tensor(index))

    return [(op, [constant(i) if i >= 0 else None for i in op["inputs"]]) for op in ops if op["op_name"] in op_names]


def read_tflite_convolutions(path):
    """Yields (op name, dequantized kernel as stored, dequantized bias) for each conv, in order."""
    interpreter = open_interpreter(path)
    convolutions = [(op["op_name"], kernel, bias) for op, (_, kernel, bias) in
                    read_tflite_ops(interpreter, ("CONV_2D", "DEPTHWISE_CONV_2D"))]
    return convolutions, interpreter.get_input_details()[0]


def input_rescaling(input_detail):
    """(scale, offset) that maps uint8 pixels to what the TFLite model saw: scale * (q - zero_point)."""
    scale, zero_point = input_detail["quantization"]
    if input_detail["dtype"] is not np.uint8 or scale == 0:
        raise UserError("The TFLite classifier must take quantized uint8 images.")
    return float(scale), float(-scale * zero_point)


def mobilenet_v2_from_tflite(path, include_top=False, input_shape=(224, 224, 3)):
    """A Keras MobileNetV2 (alpha 1.0) holding the weights of the TFLite classifier at `path`.

    Returns (model, (scale, offset)): the model takes images already rescaled by
    `pixels * scale + offset`. Without the top, it ends in global average pooling (1280 features);
    with it, in the file's 1001-way softmax (class 0 is "background").
    """
    convolutions, input_detail = read_tflite_convolutions(path)
    backbone = keras.applications.MobileNetV2(
        input_shape=input_shape, include_top=False, weights=None, pooling="avg"
    )
    layers = [l for l in backbone.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    if len(convolutions) != len(layers) + 1:
        raise UserError(
            f"{path!r} has {len(convolutions)} convolutions; a MobileNetV2 1.0 classifier has "
            f"{len(layers) + 1}. Only the TF-slim quantized MobileNetV2 1.0 classifier is supported."
        )
    for layer, (op_name, kernel, bias) in zip(layers, convolutions):
        if op_name == "DEPTHWISE_CONV_2D":  # stored [1, h, w, channels], Keras wants [h, w, channels, 1]
            kernel = kernel[0][..., None]
        else:  # stored [out, h, w, in], Keras wants [h, w, in, out]
            kernel = kernel.transpose(1, 2, 3, 0)
        if kernel.shape != tuple(layer.kernel.shape):
            raise UserError(
                f"{path!r}: the kernel for {layer.name} has shape {kernel.shape}, expected "
                f"{tuple(layer.kernel.shape)}."
            )
        layer.kernel.assign(kernel)
        batch_norm = backbone.get_layer(_batch_norm_after(layer.name))
        gamma = np.full_like(bias, np.sqrt(1.0 + batch_norm.epsilon))
        batch_norm.set_weights([gamma, bias, np.zeros_like(bias), np.ones_like(bias)])
    if not include_top:
        return backbone, input_rescaling(input_detail)
    _, logits_kernel, logits_bias = convolutions[-1]
    classifier = keras.layers.Dense(logits_bias.shape[0], activation="softmax", name="predictions")
    model = keras.Model(backbone.input, classifier(backbone.output), name="mobilenet_v2_tflite")
    classifier.set_weights([logits_kernel[:, 0, 0, :].T, logits_bias])
    return model, input_rescaling(input_detail)


def _batch_norm_after(conv_name):
    # keras.applications names: Conv1 -> bn_Conv1, Conv_1 -> Conv_1_bn, block_3_expand -> ..._BN
    return {"Conv1": "bn_Conv1", "Conv_1": "Conv_1_bn"}.get(conv_name, conv_name + "_BN")
