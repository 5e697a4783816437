"""The image classifier every image lesson trains: uint8 images -> backbone -> softmax head."""

import keras

from tfcourse.models.image_adapter import ImageAdapter


def build_classifier(backbone, num_classes, image_size, dropout=0.2, backbone_in_inference_mode=True,
                     input_shape=None, fit="resize"):
    """A functional model taking raw uint8 images [batch, size, size, 3]; preprocessing is inside.

    With `backbone_in_inference_mode`, the backbone is called with `training=False`, so its batch
    norm keeps its statistics even when fine-tuned (the usual transfer-learning recipe). A backbone
    trained from scratch runs batch norm in training mode as usual.

    `input_shape` (height, width, 1 or 3), where given and other than the backbone's, is what the
    model takes instead: an `ImageAdapter` named "adapter" resizes (`fit="resize"`) or pads
    (`fit="pad"`) it to `image_size` and makes grey RGB, inside the model.
    """
    shape = tuple(input_shape or (image_size, image_size, 3))
    images = keras.Input(shape, dtype="uint8", name="images")
    x = images
    if shape != (image_size, image_size, 3):
        x = ImageAdapter(image_size, fit, name="adapter")(x)
    x = backbone.rescaling(x)
    x = backbone.features(x, training=False if backbone_in_inference_mode else None)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(images, outputs, name="classifier")
