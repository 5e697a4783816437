"""The image classifier every image lesson trains: uint8 images -> backbone -> softmax head."""

import keras


def build_classifier(backbone, num_classes, image_size, dropout=0.2, backbone_in_inference_mode=True):
    """A functional model taking raw uint8 images [batch, size, size, 3]; preprocessing is inside.

    With `backbone_in_inference_mode`, the backbone is called with `training=False`, so its batch
    norm keeps its statistics even when fine-tuned (the usual transfer-learning recipe). A backbone
    trained from scratch runs batch norm in training mode as usual.
    """
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    x = backbone.rescaling(images)
    x = backbone.features(x, training=False if backbone_in_inference_mode else None)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(images, outputs, name="classifier")
