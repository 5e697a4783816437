"""A U-Net over a pretrained image backbone: the encoder's feature maps at strides 2 to 32, each
joined back in on the way up (the TensorFlow pix2pix / keras.io segmentation recipe).

Keras and KerasHub have no U-Net with a pretrained encoder, so it is built here from the backbone's
own layers.
"""

import keras

from tfcourse import UserError

# keras.applications layer names of the feature maps at strides 2, 4, 8, 16 and 32.
SKIP_LAYERS = {
    "mobilenet_v2": ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu",
                     "block_16_project"),
}


def encoder_feature_maps(backbone, name):
    """The backbone's [stride 2, 4, 8, 16, 32] feature maps as one model (from its pixels input)."""
    model = backbone.features
    if name not in SKIP_LAYERS or not isinstance(model, keras.Model):
        raise UserError(f"A U-Net needs the feature maps of a keras.applications backbone ({', '.join(SKIP_LAYERS)}); "
                        f"{backbone.source!r} gives only a pooled vector.")
    return keras.Model(model.input, [model.get_layer(layer).output for layer in SKIP_LAYERS[name]],
                       name=f"{name}_feature_maps")


def build_unet(backbone, name, image_size, decoder_filters=(256, 128, 64, 32)):
    """uint8 [B, size, size, 3] -> object logits [B, size, size] (threshold at 0).

    Each decoder step doubles the resolution (a transposed convolution), joins the encoder map of
    that stride, and mixes them with a 3x3 convolution; a last transposed convolution returns to
    the input's resolution.
    """
    if image_size % 32:
        raise UserError(f"data.image_size = {image_size}: a U-Net needs a multiple of 32.")
    encoder = encoder_feature_maps(backbone, name)
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    *skips, x = encoder(backbone.rescaling(keras.ops.cast(images, "float32")),
                        training=False if backbone.pretrained else None)
    for i, (skip, filters) in enumerate(zip(reversed(skips), decoder_filters)):
        x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"up_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"up_{i}_norm")(x)
        x = keras.layers.Concatenate(name=f"join_{i}")([keras.layers.ReLU(name=f"up_{i}_relu")(x), skip])
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"mix_{i}")(x)
    logits = keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same", name="logits")(x)
    return keras.Model(images, keras.layers.Reshape((image_size, image_size), name="object_logits")(logits), name="unet")
