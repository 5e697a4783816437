"""Stable Diffusion v1 from KerasCV, with its weights from KerasCV's download or from a local folder.

    sd = StableDiffusionV1("download", bpe_path="")              # KerasCV's own URLs (Hugging Face, GitHub)
    sd = StableDiffusionV1("/data/sd-v1", bpe_path="/data/bpe_simple_vocab_16e6.txt.gz")
    images = sd.sampler().generate(["a photograph of an astronaut riding a horse"], seed=0)

A local folder holds KerasCV's four weight files, under the names KerasCV downloads them as
(`WEIGHT_FILES`); each sub-model is built with `download_weights=False` and loads its file.
"random" builds them untrained: the pipeline runs, the images are noise.

The CLIP tokenizer's BPE vocabulary (`bpe_simple_vocab_16e6.txt.gz`) is not in the keras-cv wheel:
KerasCV downloads it from OpenAI's CLIP repository, and it also ships inside the `open_clip_torch`
wheel (`open_clip/bpe_simple_vocab_16e6.txt.gz`). `bpe_path=""` downloads it.

`jit_compile` (XLA) defaults to True in KerasCV; on a CPU it is about 3x slower, so "auto" turns
it on only where a GPU or TPU is present.

DreamBooth on the full model (`dreambooth_model`, `dreambooth_dataset`, `compile_dreambooth`) is
sized for 16 GB GPUs and TPUs: mixed precision (`dtype_policy=mixed_precision_policy()`), Adafactor
(factored second moments instead of AdamW's two full copies of the 860M UNet), gradient accumulation
(a large effective batch from small ones), and any tf.distribute strategy around it. On a CPU, one
step at 128 px in bfloat16 peaked at 16.6 GB of memory with Adafactor and about 19 GB with AdamW.

    with train.model_scope(strategy):
        sd = StableDiffusionV1(folder, bpe_path=bpe, dtype_policy=mixed_precision_policy())
        model = dreambooth_model(sd)
        compile_dreambooth(model, sd, gradient_accumulation_steps=4)
    model.fit(dreambooth_dataset(sd, instance_images, class_images, "a photo of sks dog", "a photo of dog",
                                 batch_size=2, prior_loss_weight=1.0), steps_per_epoch=400)
    sd.sampler().generate(["a photo of sks dog on the beach"], seed=0)
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras_cv.src.models.stable_diffusion.clip_tokenizer import SimpleTokenizer
from keras_cv.src.models.stable_diffusion.decoder import Decoder
from keras_cv.src.models.stable_diffusion.diffusion_model import DiffusionModel
from keras_cv.src.models.stable_diffusion.image_encoder import ImageEncoder
from keras_cv.src.models.stable_diffusion.text_encoder import TextEncoder

from tfcourse import UserError
from tfcourse.models import diffusion

MAX_PROMPT_LENGTH = 77
TIME_WIDTH = 320
_HF = "https://huggingface.co/fchollet/stable-diffusion/resolve/main/"
# KerasCV's own download locations and SHA-256 sums (keras_cv/src/models/stable_diffusion/*.py).
WEIGHT_FILES = {
    "text_encoder": ("kcv_encoder.h5", "4789e63e07c0e54d6a34a29b45ce81ece27060c499a709d556c7755b42bb0dc4"),
    "diffusion_model": ("kcv_diffusion_model.h5", "8799ff9763de13d7f30a683d653018e114ed24a6a819667da4f5ee10f9e805fe"),
    "decoder": ("kcv_decoder.h5", "ad350a65cc8bc4a80c8103367e039a3329b4231c2469a1093869a345f55b1962"),
    "image_encoder": ("vae_encoder.h5", "c60fb220a40d090e0f86a6ab4c312d113e115c87c40ff75d11ffcf380aab7ebb"),
}


def mixed_precision_policy():
    """float16 with loss scaling on a GPU; bfloat16 (no scaling needed) on a TPU or a CPU."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def default_jit_compile():
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU"))


class StableDiffusionV1:
    """KerasCV's four sub-models, its tokenizer, and the course's sampler over them."""

    def __init__(self, weights="download", image_size=512, bpe_path="", jit_compile="auto", dtype_policy="float32"):
        if image_size % 128:
            raise UserError(f"image_size = {image_size}: Stable Diffusion's UNet needs a multiple of 128.")
        if bpe_path and not os.path.isfile(bpe_path):
            raise UserError(f"The CLIP BPE vocabulary {bpe_path!r} does not exist. It is bpe_simple_vocab_16e6.txt.gz "
                            "from github.com/openai/CLIP (clip/) or inside the open_clip_torch wheel (open_clip/).")
        self.image_size = image_size
        self.jit_compile = default_jit_compile() if jit_compile == "auto" else bool(jit_compile)
        self.pretrained = weights != "random"
        files = {name: self._weights_file(weights, *file) for name, file in WEIGHT_FILES.items()} if self.pretrained else {}
        self.tokenizer = SimpleTokenizer(bpe_path or None)
        self.dtype_policy = dtype_policy
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(dtype_policy)  # KerasCV's sub-models take the global policy
        try:
            self.text_encoder = TextEncoder(MAX_PROMPT_LENGTH, download_weights=False)
            self.diffusion_model = DiffusionModel(image_size, image_size, MAX_PROMPT_LENGTH, download_weights=False)
            self.decoder = Decoder(image_size, image_size, download_weights=False)
            self.image_encoder = ImageEncoder(download_weights=False)
        finally:
            keras.config.set_dtype_policy(previous)
        for name, path in files.items():
            getattr(self, name).load_weights(path)

    @staticmethod
    def _weights_file(weights, file_name, sha256):
        if weights == "download":
            return keras.utils.get_file(file_name, _HF + file_name, file_hash=sha256)
        path = os.path.join(weights, file_name)
        if not os.path.isfile(path):
            raise UserError(f"Stable Diffusion weights folder {weights!r} has no {file_name}; it needs "
                            f"{', '.join(f for f, _ in WEIGHT_FILES.values())} (KerasCV's files, from {_HF}).")
        return path

    def tokens(self, prompts):
        """int32 [B, 77]: each prompt's CLIP tokens padded with end-of-text, as KerasCV does."""
        rows = []
        for prompt in prompts:
            ids = self.tokenizer.encode(prompt)
            if len(ids) > MAX_PROMPT_LENGTH:
                raise UserError(f"The prompt {prompt[:60]!r}... is {len(ids)} tokens; Stable Diffusion takes {MAX_PROMPT_LENGTH}.")
            rows.append(ids + [self.tokenizer.end_of_text] * (MAX_PROMPT_LENGTH - len(ids)))
        return np.asarray(rows, "int32")

    def encode_text(self, prompts):
        tokens = self.tokens(prompts)
        return tf.cast(self.text_encoder({"tokens": tf.constant(tokens), "positions": positions(len(tokens))}), tf.float32)

    def encode_images(self, images, batch_size=4):
        """uint8 [n, S, S, 3] -> latents [n, S/8, S/8, 4] (float32)."""
        return np.concatenate([tf.cast(self.image_encoder(tf.constant(np.asarray(images[i : i + batch_size], "float32") / 127.5 - 1)),
                                       tf.float32).numpy() for i in range(0, len(images), batch_size)])

    def sampler(self):
        """The course's sampler in Stable Diffusion's latent space (8x smaller, 4 channels)."""
        return diffusion.Sampler(
            lambda inputs: self.diffusion_model({"latent": inputs[0], "timestep_embedding": inputs[1], "context": inputs[2]}),
            self.encode_text, diffusion.scaled_linear_alphas_cumprod(), TIME_WIDTH,
            encode_images=self.encode_images, decode=lambda x: tf.cast(self.decoder(x), tf.float32), clip_x0=False,
            jit_compile=self.jit_compile,
            x_shape=(self.image_size // 8, self.image_size // 8, 4))


def positions(batch_size):
    return tf.repeat(tf.range(MAX_PROMPT_LENGTH, dtype=tf.int32)[None], batch_size, axis=0)


# ## DreamBooth on the full model


def dreambooth_model(sd, train_text_encoder=False):
    """What DreamBooth fits: {"latent", "timestep_embedding", "tokens", "positions"} -> the predicted
    noise (float32, also under mixed precision), the UNet over the text encoder (frozen unless asked)."""
    latent = keras.Input(sd.diffusion_model.inputs[0].shape[1:], name="latent")
    time = keras.Input((TIME_WIDTH,), name="timestep_embedding")
    tokens = keras.Input((MAX_PROMPT_LENGTH,), dtype="int32", name="tokens")
    position_ids = keras.Input((MAX_PROMPT_LENGTH,), dtype="int32", name="positions")
    sd.text_encoder.trainable = train_text_encoder
    noise = sd.diffusion_model([latent, time, sd.text_encoder([tokens, position_ids])])
    return keras.Model({"latent": latent, "timestep_embedding": time, "tokens": tokens, "positions": position_ids},
                       keras.layers.Activation("linear", dtype="float32", name="noise")(noise), name="dreambooth")


def dreambooth_dataset(sd, instance_images, class_images, instance_prompt, class_prompt, batch_size,
                       prior_loss_weight, seed=0):
    """Endless batches for `dreambooth_model`: the images are encoded to latents once, the prompts
    tokenized once; steps and noise are drawn afresh per batch."""
    def prompted(images, prompt):
        return sd.encode_images(images), np.repeat(sd.tokens([prompt]), len(images), 0)

    alphas = diffusion.scaled_linear_alphas_cumprod()
    mix = diffusion.dreambooth_mix(prompted(instance_images, instance_prompt), prompted(class_images, class_prompt),
                                   batch_size, prior_loss_weight, seed)

    def noised(index, batch):
        latents, tokens, weights = batch
        x_t, time, noise = diffusion.noised(latents, alphas, TIME_WIDTH, tf.stack([tf.cast(index, tf.int32), seed]))
        return {"latent": x_t, "timestep_embedding": time, "tokens": tokens,
                "positions": positions(tf.shape(tokens)[0])}, noise, weights

    return mix.enumerate().map(noised).prefetch(tf.data.AUTOTUNE)


def compile_dreambooth(model, sd, learning_rate=5e-6, gradient_accumulation_steps=None):
    """Adafactor with gradient accumulation; loss scaling where the policy is float16."""
    optimizer = keras.optimizers.Adafactor(learning_rate, gradient_accumulation_steps=gradient_accumulation_steps)
    if sd.dtype_policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=sd.jit_compile)
