"""MoveNet SinglePose as a frozen keypoint extractor: one image in, COCO's 17 keypoints out.

The model comes from a MoveNet TFLite file (run with LiteRT; e.g. the int8 Lightning model, uint8
input [1, 192, 192, 3]) or from a TF Hub handle / local SavedModel folder (its
`serving_default` signature takes int32 [1, H, W, 3] and returns `output_0`; Lightning wants
192 px, Thunder 256 px). Both return [1, 1, 17, 3] rows of (y, x, score), normalised to the
model's square input.

The image is padded to a square (centred, aspect ratio kept) and resized to the model's input
size; keypoints are mapped back to (x, y) normalised to the ORIGINAL image (0..1 across its width
and height). A SavedModel or a TFLite file is a program: only load models you trust.
"""

import os

import numpy as np
import tensorflow as tf

from tfcourse import UserError

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # COCO's order, which MoveNet uses
KEYPOINT = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
SKELETON = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12),
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)  # bones between keypoint indices, for drawing
LIGHTNING_HANDLE = "https://tfhub.dev/google/movenet/singlepose/lightning/4"
THUNDER_HANDLE = "https://tfhub.dev/google/movenet/singlepose/thunder/4"


def pad_to_square(image, size):
    """uint8 [H, W, 3] -> (uint8 [size, size, 3], (top, left, side)): centred zero padding, then resize.

    `side` is the padded square's side in original pixels; (top, left) the image's offset in it.
    """
    height, width = int(image.shape[0]), int(image.shape[1])
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = tf.image.pad_to_bounding_box(image, top, left, side, side)
    resized = tf.image.resize(square, (size, size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy(), (top, left, side)


def unpad_keypoints(yx_score, padding, image_shape):
    """MoveNet's [17, 3] (y, x, score) in the padded square -> [17, 3] (x, y, score) in the original
    image, x and y normalised by its width and height."""
    top, left, side = padding
    height, width = image_shape[:2]
    yx_score = np.asarray(yx_score, np.float32)
    x = (yx_score[:, 1] * side - left) / width
    y = (yx_score[:, 0] * side - top) / height
    return np.stack([x, y, yx_score[:, 2]], axis=-1)


def pad_keypoints(xy_score, padding, image_shape):
    """The inverse of `unpad_keypoints`: (x, y, score) in the image -> (y, x, score) in the square."""
    top, left, side = padding
    height, width = image_shape[:2]
    xy_score = np.asarray(xy_score, np.float32)
    return np.stack([(xy_score[:, 1] * height + top) / side, (xy_score[:, 0] * width + left) / side,
                     xy_score[:, 2]], axis=-1)


class MoveNet:
    """`MoveNet(source)(image)` -> [17, 3] (x, y, score), x and y normalised to the image (see module doc).

    `source`: a .tflite file, a local SavedModel folder or a TF Hub handle. `input_size` 0 reads it
    from the TFLite file, or from the handle (256 for Thunder, else 192).
    """

    def __init__(self, source, input_size=0):
        self.source = source
        if source.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter  # the deprecated tf.lite one misbehaves here

            if not os.path.isfile(source):
                raise UserError(f"MoveNet TFLite file {source!r} does not exist.")
            self._interpreter = Interpreter(model_path=source)
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
            self._output = self._interpreter.get_output_details()[0]
            model_size = int(self._input["shape"][1])
            if input_size and input_size != model_size:
                raise UserError(f"{source!r} takes {model_size} px images, not extractor.input_size={input_size}.")
            if tuple(self._output["shape"]) != (1, 1, 17, 3):
                raise UserError(f"{source!r} is not MoveNet SinglePose: its output is {self._output['shape']}, "
                                "not [1, 1, 17, 3].")
            self.input_size = model_size
            self.kind = "tflite"
        else:
            from tfcourse import hub

            self._module = hub.load_module(source)
            if "serving_default" not in getattr(self._module, "signatures", {}):
                raise UserError(f"MoveNet module {source!r} has no serving_default signature.")
            self._signature = self._module.signatures["serving_default"]
            self.input_size = input_size or (256 if "thunder" in source.lower() else 192)
            self.kind = "hub"

    def _raw(self, square):
        """uint8 [size, size, 3] -> [17, 3] (y, x, score) in the square."""
        if self.kind == "tflite":
            self._interpreter.set_tensor(self._input["index"], square[None].astype(self._input["dtype"]))
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"])[0, 0]
        return self._signature(input=tf.constant(square[None], tf.int32))["output_0"].numpy()[0, 0]

    def __call__(self, image):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"MoveNet takes one RGB image [H, W, 3], got shape {image.shape}.")
        square, padding = pad_to_square(image, self.input_size)
        return unpad_keypoints(self._raw(square), padding, image.shape)


def read_reference_keypoints(path):
    """The publisher's reference CSV (pose_id, pose_score, keypoint_id, keypoint_score, keypoint_x,
    keypoint_y; normalised) -> [17, 3] (x, y, score)."""
    import csv

    with open(path) as f:
        rows = list(csv.DictReader(f))
    needed = {"keypoint_id", "keypoint_score", "keypoint_x", "keypoint_y"}
    if not rows or not needed <= set(rows[0]):
        raise UserError(f"Reference keypoints {path!r} must have columns {sorted(needed)}.")
    keypoints = np.full((len(KEYPOINT_NAMES), 3), np.nan, np.float32)
    for row in rows:
        keypoints[int(row["keypoint_id"])] = [float(row["keypoint_x"]), float(row["keypoint_y"]), float(row["keypoint_score"])]
    if np.isnan(keypoints).any():
        raise UserError(f"Reference keypoints {path!r} do not list all {len(KEYPOINT_NAMES)} keypoints.")
    return keypoints
