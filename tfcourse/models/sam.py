"""Segment Anything (SAM) from KerasHub: published presets, small configurations built from scratch,
and SAM's training step.

KerasHub, not KerasCV: on our stack (Keras 3.15.1) keras-cv 0.9.0's SegmentAnythingModel does not
build (its ViTDetBackbone adds weights to a built layer: "You cannot add new elements of state");
keras-hub 0.32.0's SAM builds, reloads from `.keras` exactly, exports, and loads presets from
Kaggle or from a local folder (`save_to_preset`).

SAM is three parts: an image encoder (a ViTDet) that runs once per image, a prompt encoder (points,
boxes, masks) and a mask decoder that runs once per prompt. The decoder predicts 4 masks as logits
at a quarter of the input resolution: mask 0 for an unambiguous prompt (a box, several points), 1-3
the alternatives for an ambiguous one (a single point), each with its predicted IoU.

KerasHub's `SAMImageSegmenter.fit` raises NotImplementedError. `PromptedSAM` below is the prompt
encoder and mask decoder (and, trained from scratch, the image encoder) as a Keras model with SAM's
training step in `train_step`, so `fit` drives it with the course's callbacks and strategies.
"""

import dataclasses
import os

import keras
import keras_hub
import tensorflow as tf
from keras import ops

from tfcourse import UserError

PRESETS = ("sam_base_sa1b", "sam_large_sa1b", "sam_huge_sa1b")
# ImageNet mean and standard deviation on [0, 255] pixels, as the presets' image converter uses them.
PIXEL_MEAN, PIXEL_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


@dataclasses.dataclass(frozen=True)
class ScratchSize:
    image_size: int
    encoder_width: int
    encoder_layers: int
    encoder_heads: int
    global_attention: tuple  # encoder layers with global attention; the others attend within windows
    window_size: int
    embedding_width: int  # image embeddings, prompt embeddings and the decoder's transformer
    decoder_mlp: int


SCRATCH_SIZES = {
    # 256 px, 16 x 16 image embeddings, masks at 64 x 64; a prompt in about 0.1 s on 2 CPU cores.
    "small": ScratchSize(256, 256, 4, 8, (1, 3), 8, 256, 2048),
    # tests and smoke runs only
    "tiny": ScratchSize(64, 32, 2, 2, (1,), 2, 32, 64),
}


@dataclasses.dataclass
class SAM:
    backbone: keras_hub.models.SAMBackbone  # image_encoder, prompt_encoder, mask_decoder
    image_converter: keras.layers.Layer  # resizes and normalises pixels for the image encoder
    source: str
    pretrained: bool

    @property
    def image_size(self):
        return int(self.backbone.image_encoder.input.shape[1])

    def count_params(self):
        """All three parts (SAMBackbone's own count leaves out the mask decoder)."""
        b = self.backbone
        return sum(part.count_params() for part in (b.image_encoder, b.prompt_encoder, b.mask_decoder))


def build_sam(name):
    """`name`: a KerasHub preset (downloaded from Kaggle), a local preset folder, or a SCRATCH_SIZES
    key (randomly initialised)."""
    if name in SCRATCH_SIZES:
        size = SCRATCH_SIZES[name]
        return SAM(_scratch_backbone(size), _image_converter(size.image_size), f"scratch:{name}", pretrained=False)
    if name not in PRESETS and not os.path.isdir(name):
        raise UserError(f"model SAM {name!r} is neither a KerasHub SAM preset ({', '.join(PRESETS)}), nor a local preset "
                        f"folder, nor a size to build from scratch ({', '.join(SCRATCH_SIZES)}).")
    try:
        # The task, not SAMBackbone.from_preset: only the task builds the mask decoder before loading its weights.
        segmenter = keras_hub.models.SAMImageSegmenter.from_preset(name)
    except Exception as error:  # kagglehub and keras-hub raise many types; the message names the cause
        raise UserError(f"The SAM preset {name!r} cannot be loaded ({type(error).__name__}: {str(error)[:300]}). "
                        "Without a network, save it once with `save_to_preset(folder)` where there is one and "
                        "give that folder, or build one from scratch (small, tiny).") from None
    return SAM(segmenter.backbone, segmenter.preprocessor.image_converter, f"keras_hub:{name}", pretrained=True)


def _image_converter(image_size):
    return keras_hub.layers.SAMImageConverter(image_size=(image_size, image_size), scale=[1 / s for s in PIXEL_STD],
                                              offset=[-m / s for m, s in zip(PIXEL_MEAN, PIXEL_STD)])


def _scratch_backbone(size):
    side = size.image_size // 16  # ViTDet's patches are 16 px
    image_encoder = keras_hub.models.ViTDetBackbone(
        hidden_size=size.encoder_width, num_layers=size.encoder_layers, intermediate_dim=4 * size.encoder_width,
        num_heads=size.encoder_heads, global_attention_layer_indices=list(size.global_attention), patch_size=16,
        num_output_channels=size.embedding_width, window_size=size.window_size,
        image_shape=(size.image_size, size.image_size, 3))
    prompt_encoder = keras_hub.layers.SAMPromptEncoder(
        hidden_size=size.embedding_width, image_embedding_size=(side, side),
        input_image_size=(size.image_size, size.image_size), mask_in_channels=16)
    mask_decoder = keras_hub.layers.SAMMaskDecoder(
        num_layers=2, hidden_size=size.embedding_width, intermediate_dim=size.decoder_mlp, num_heads=8 if
        size.embedding_width >= 64 else 2, embedding_dim=size.embedding_width, num_multimask_outputs=3, iou_head_depth=3,
        iou_head_hidden_dim=size.embedding_width)
    return keras_hub.models.SAMBackbone(image_encoder=image_encoder, prompt_encoder=prompt_encoder,
                                        mask_decoder=mask_decoder)


def image_encoder_model(sam, image_size):
    """uint8 [B, image_size, image_size, 3] images -> SAM's image embeddings (resized and normalised inside)."""
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    pixels = sam.image_converter(ops.cast(images, "float32"))
    return keras.Model(images, sam.backbone.image_encoder(pixels), name="sam_image_encoder")


def prompt_decoder_model(sam, image_size):
    """SAM's prompt encoder + mask decoder over image embeddings, with prompts in the pixels of an
    `image_size` image: {"image_embeddings", "points" [B, N, 2] (x, y), "labels" [B, N] (1 object,
    0 background, -1 padding), "boxes" [B, M, 2, 2] ((x0, y0), (x1, y1)), "masks" [B, K, h, w, 1]
    (a previous mask's logits at a quarter of SAM's resolution)} -> {"masks" logits, "iou_pred"}."""
    embeddings = sam.backbone.image_encoder.output.shape[1:]
    mask_side = 4 * embeddings[0]
    inputs = {
        "image_embeddings": keras.Input(embeddings, name="image_embeddings"),
        "points": keras.Input((None, 2), name="points"),
        "labels": keras.Input((None,), name="labels"),
        "boxes": keras.Input((None, 2, 2), name="boxes"),
        "masks": keras.Input((None, mask_side, mask_side, 1), name="masks"),
    }
    scale = sam.image_size / image_size  # prompts in the image's pixels -> SAM's input pixels
    prompts = sam.backbone.prompt_encoder(points=inputs["points"] * scale, labels=inputs["labels"],
                                          boxes=inputs["boxes"] * scale, masks=inputs["masks"])
    return keras.Model(inputs, sam.backbone.mask_decoder(image_embeddings=inputs["image_embeddings"], **prompts),
                       name="sam_prompt_decoder")


def no_prompts(batch_size, mask_side):
    """Empty points, labels, boxes and masks: `prompt_decoder_model` inputs for the prompts not given."""
    return {"points": tf.zeros((batch_size, 0, 2)), "labels": tf.zeros((batch_size, 0)),
            "boxes": tf.zeros((batch_size, 0, 2, 2)), "masks": tf.zeros((batch_size, 0, mask_side, mask_side, 1))}


def upsample_masks(logits, image_size):
    """[B, K, h, w] mask logits -> [B, K, image_size, image_size], bilinear (threshold at 0 for masks)."""
    channels_last = ops.transpose(logits, (0, 2, 3, 1))
    return ops.transpose(ops.image.resize(channels_last, (image_size, image_size), interpolation="bilinear"), (0, 3, 1, 2))


# ## SAM's training step

FOCAL_WEIGHT = 20.0  # SAM's paper: focal and Dice losses in a 20:1 ratio


@keras.saving.register_keras_serializable("tfcourse")
def dice_focal_loss(masks_true, logits):
    """Per mask: FOCAL_WEIGHT x focal loss (mean over pixels) + Dice loss. `masks_true` [..., H, W]
    (1 object, else 0; broadcast over the masks), `logits` [..., H, W] -> [...]."""
    masks_true = ops.cast(ops.equal(masks_true, 1), logits.dtype)
    masks_true = ops.broadcast_to(masks_true, ops.shape(logits))
    dice = keras.losses.dice(masks_true, ops.sigmoid(logits), axis=(-2, -1))
    flat_shape = (*ops.shape(logits)[:-2], -1)
    focal = keras.losses.binary_focal_crossentropy(ops.reshape(masks_true, flat_shape), ops.reshape(logits, flat_shape),
                                                   from_logits=True)
    return FOCAL_WEIGHT * focal + dice


def mask_iou(masks_true, logits):
    """IoU of each thresholded mask ([B, K, H, W] logits) with the true object ([B, H, W]) -> [B, K]."""
    predicted = ops.cast(logits > 0, "float32")
    truth = ops.cast(ops.equal(masks_true, 1), "float32")[:, None]
    intersection = ops.sum(predicted * truth, axis=(2, 3))
    union = ops.sum(ops.maximum(predicted, truth), axis=(2, 3))
    return intersection / ops.maximum(union, 1.0)


def sam_loss(masks_true, outputs):
    """SAM's loss per example: the single mask (0) plus the best of the three alternatives (SAM
    backpropagates only the lowest-loss one), each Dice + focal on masks upsampled to the image;
    plus the mean squared error of the predicted IoUs against the masks' actual IoUs."""
    logits = upsample_masks(outputs["masks"], ops.shape(masks_true)[-1])
    per_mask = dice_focal_loss(masks_true[:, None], logits)
    iou = ops.stop_gradient(mask_iou(masks_true, logits))
    iou_error = ops.mean(ops.square(outputs["iou_pred"] - iou), axis=-1)
    return per_mask[:, 0] + ops.min(per_mask[:, 1:], axis=-1) + iou_error, iou[:, 0]


@keras.saving.register_keras_serializable("tfcourse")
class PromptedSAM(keras.Model):
    """Box-prompted SAM for training: {"boxes" [B, 1, 2, 2] and "image_embeddings" (cached), or "images"
    (uint8, when it holds the image encoder)} -> the decoder's {"masks", "iou_pred"}.

    `train_step` is SAM's step: the loss of `sam_loss`, averaged over the global batch with
    `tf.nn.compute_average_loss` so that replicas add up to one step; logs "loss" and "mask_iou"
    (the IoU of mask 0 with the truth, at the image's resolution).
    """

    def __init__(self, prompt_decoder, image_encoder=None, **kwargs):
        super().__init__(**kwargs)
        self.prompt_decoder = prompt_decoder
        self.image_encoder = image_encoder
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.iou_tracker = keras.metrics.Mean(name="mask_iou")

    def call(self, inputs, training=False):
        if self.image_encoder is None:
            embeddings = inputs["image_embeddings"]
        else:
            embeddings = self.image_encoder(inputs["images"], training=training)
        mask_side = self.prompt_decoder.input["masks"].shape[2]
        prompts = {**no_prompts(ops.shape(embeddings)[0], mask_side), "boxes": inputs["boxes"]}
        return self.prompt_decoder({"image_embeddings": embeddings, **prompts}, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.iou_tracker]

    def train_step(self, data):
        x, masks_true = data
        with tf.GradientTape() as tape:
            per_example, iou = sam_loss(masks_true, self(x, training=True))
            loss = tf.nn.compute_average_loss(per_example)
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._track(per_example, iou)

    def test_step(self, data):
        x, masks_true = data
        return self._track(*sam_loss(masks_true, self(x, training=False)))

    def _track(self, per_example, iou):
        self.loss_tracker.update_state(per_example)
        self.iou_tracker.update_state(iou)
        return {"loss": self.loss_tracker.result(), "mask_iou": self.iou_tracker.result()}

    def get_config(self):
        return {**super().get_config(), "prompt_decoder": keras.saving.serialize_keras_object(self.prompt_decoder),
                "image_encoder": keras.saving.serialize_keras_object(self.image_encoder)}

    @classmethod
    def from_config(cls, config):
        for key in ("prompt_decoder", "image_encoder"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
