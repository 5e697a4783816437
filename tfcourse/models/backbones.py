"""Image backbones: one name, several sources of the same architecture.

A backbone maps images (float pixels in [0, 255]) to a feature vector. Its weights come from
- `hub`: the TF Hub feature-vector module (a URL handle, the TFHUB_CACHE_DIR cache, or a local
  SavedModel folder given as `hub_handle`);
- `imagenet`: the keras.applications ImageNet weights (downloaded by Keras);
- `random`: no weights, for training from scratch;
- a path to a `.weights.h5` file saved from the keras.applications model;
- a path to a quantized TFLite classifier (MobileNetV2 only; see `tflite_import`).
"""

import dataclasses
import os

import keras

from tfcourse import UserError
from tfcourse.hub import HubModule
from tfcourse.models.tflite_import import mobilenet_v2_from_tflite


@dataclasses.dataclass(frozen=True)
class Architecture:
    hub_handle: str  # TF2 feature-vector module; takes images in [0, 1]
    application: object  # keras.applications constructor
    application_rescaling: tuple  # (scale, offset) from [0, 255] to what the application expects
    has_width_multiplier: bool


ARCHITECTURES = {
    "efficientnet_b0": Architecture(
        "https://tfhub.dev/tensorflow/efficientnet/b0/feature-vector/1",
        keras.applications.EfficientNetB0,
        (1.0, 0.0),  # the application rescales inside
        has_width_multiplier=False,
    ),
    "mobilenet_v2": Architecture(
        "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5",
        keras.applications.MobileNetV2,
        (1 / 127.5, -1.0),
        has_width_multiplier=True,
    ),
}


@dataclasses.dataclass
class Backbone:
    """`rescaling` maps [0, 255] pixels to what `features` expects; `features` is a layer or model."""

    rescaling: keras.layers.Layer
    features: keras.layers.Layer
    source: str
    pretrained: bool

    def fine_tune_top(self, num_layers):
        """Unfreezes the top `num_layers` layers of the backbone; batch norm layers stay frozen.

        A hub module is one layer: it is unfrozen whole.
        """
        self.features.trainable = True
        if isinstance(self.features, HubModule):
            return
        layers = self.features.layers
        for i, layer in enumerate(layers):
            is_top = i >= len(layers) - num_layers
            layer.trainable = is_top and not isinstance(layer, keras.layers.BatchNormalization)


def build_backbone(name, source, image_size, hub_handle="", width_multiplier=1.0):
    if name not in ARCHITECTURES:
        raise UserError(f"Unknown backbone {name!r}; choose one of: {', '.join(ARCHITECTURES)}.")
    architecture = ARCHITECTURES[name]
    if width_multiplier != 1.0 and (source not in ("random",) or not architecture.has_width_multiplier):
        raise UserError(
            f"model.width_multiplier = {width_multiplier} needs model.source = 'random' and a "
            "backbone with a width multiplier (mobilenet_v2): pretrained weights exist for 1.0 only."
        )
    shape = (image_size, image_size, 3)
    if source == "hub":
        handle = hub_handle or architecture.hub_handle
        features = HubModule(handle, trainable=False, name="hub_" + name)
        return Backbone(_rescaling(1 / 255.0, 0.0), features, f"hub:{handle}", pretrained=True)
    if source.endswith(".tflite"):
        if name != "mobilenet_v2":
            raise UserError(f"model.source {source!r}: TFLite weights import only into mobilenet_v2.")
        _require_file(source)
        features, (scale, offset) = mobilenet_v2_from_tflite(source, input_shape=shape)
        return Backbone(_rescaling(scale, offset), features, f"tflite:{source}", pretrained=True)
    if source in ("imagenet", "random") or source.endswith(".weights.h5"):
        if source.endswith(".weights.h5"):
            _require_file(source)
        kwargs = {"alpha": width_multiplier} if architecture.has_width_multiplier else {}
        features = architecture.application(
            input_shape=shape,
            include_top=False,
            pooling="avg",
            weights=None if source == "random" else source,
            **kwargs,
        )
        rescaling = _rescaling(*architecture.application_rescaling)
        pretrained = source != "random"
        if not pretrained:
            _set_batch_norm_momentum(features, SCRATCH_BATCH_NORM_MOMENTUM)
        return Backbone(rescaling, features, f"keras.applications:{source}", pretrained)
    raise UserError(
        f"model.source {source!r} is not a weights source; use 'hub', 'imagenet', 'random', a "
        "path to a .weights.h5 file, or a path to a .tflite classifier (mobilenet_v2)."
    )


# keras.applications uses 0.999: its moving statistics need thousands of steps, more than a short
# from-scratch run has, and a model evaluated before they settle sits at chance.
SCRATCH_BATCH_NORM_MOMENTUM = 0.9


def _set_batch_norm_momentum(model, momentum):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _rescaling(scale, offset):
    return keras.layers.Rescaling(scale, offset, name="rescaling")


def _require_file(path):
    if not os.path.isfile(path):
        raise UserError(f"model.source: the weights file {path!r} does not exist.")
