"""Small images into an ImageNet backbone, inside the model: resize or pad, grey to RGB.

A classifier that adapts its input itself takes the raw small image (28x28x1 MNIST, 32x32x3
CIFAR-10) as uint8, so its SavedModel and TFLite exports need no preprocessing outside.
Keras has Resizing and ZeroPadding2D but no grey-to-RGB layer, and those layers keep a uint8
input uint8 at run time (and pad with 0 only), so one small layer does all three steps on floats.
"""

import keras

from tfcourse import UserError

FITS = ("resize", "pad")


@keras.saving.register_keras_serializable(package="tfcourse")
class ImageAdapter(keras.layers.Layer):
    """uint8 [batch, h, w, 1 or 3] -> float32 pixels [batch, size, size, 3], still in [0, 255].

    - `fit="resize"`: bilinear resizing to size x size (upsampling a small image);
    - `fit="pad"`: the image centred on a size x size canvas of `pad_value` (no resampling);
    - a single grey channel is repeated into R, G and B.
    """

    def __init__(self, size, fit="resize", pad_value=0.0, **kwargs):
        super().__init__(**kwargs)
        if fit not in FITS:
            raise UserError(f"Image fit {fit!r} is unknown; choose one of: {', '.join(FITS)}.")
        self.size, self.fit, self.pad_value = int(size), fit, float(pad_value)

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        if channels not in (1, 3):
            raise UserError(f"Images must have 1 (grey) or 3 (RGB) channels, not {channels}.")
        if self.fit == "pad" and (height > self.size or width > self.size):
            raise UserError(f"Cannot pad {height}x{width} images to {self.size}x{self.size}: they are larger. "
                            "Use fit='resize'.")

    def call(self, images):
        x = keras.ops.cast(images, "float32")
        height, width, channels = images.shape[1:]
        if (height, width) != (self.size, self.size):
            if self.fit == "resize":
                x = keras.ops.image.resize(x, (self.size, self.size), interpolation="bilinear")
            else:
                top, left = (self.size - height) // 2, (self.size - width) // 2
                padding = [(0, 0), (top, self.size - height - top), (left, self.size - width - left), (0, 0)]
                x = keras.ops.pad(x, padding, constant_values=self.pad_value)
        if channels == 1:
            x = keras.ops.concatenate([x, x, x], axis=-1)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "fit": self.fit, "pad_value": self.pad_value}
