"""Text-conditioned diffusion, as Stable Diffusion does it, for the full KerasCV model and a small one.

A diffusion model learns to undo noise. Training: take an image x0, a step t of T, noise eps, and
x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps (a_t = the schedule's cumulative alpha); the denoiser
sees (x_t, an embedding of t, the caption's text encoding) and predicts eps (Stable Diffusion v1)
or v = sqrt(a_t) eps - sqrt(1 - a_t) x0 (the small model: `small_unet` says why), with a mean
squared error. Sampling (DDIM, eta = 0): from pure noise, step down a subsequence of the T steps, each time
estimating x0 from the predicted eps and re-noising it to the next level. Classifier-free guidance
mixes the predictions with and without the caption: eps = eps_empty + scale (eps_caption - eps_empty);
the model learns both because captions are dropped from 10 % of training examples.

The same sampler edits images:
- img2img: noise the input to the level `strength` sets and denoise from there under the new
  prompt. Strength 0 returns the input (up to autoencoder error, for a latent model); strength 1 is
  text-to-image from the same noise.
- inpainting: at every step the region outside the mask is replaced by the input noised to that
  step's level, and after decoding the input's pixels are put back outside the mask, so they are
  unchanged exactly.

The small model is in pixel space: 32 x 32 images, split into 2 x 2 patches (space-to-depth, as
"simple diffusion" does) so the UNet runs at 16 x 16. It has no autoencoder, so there is no
autoencoder to train and no reconstruction error; at 32 px a latent model would save little.
Its UNet is built from KerasCV's own Stable Diffusion blocks (ResBlock, SpatialTransformer), its
text encoder from KerasHub's transformer layers.
"""

import dataclasses
import math
import warnings

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras_cv.src.models.stable_diffusion.diffusion_model import ResBlock, SpatialTransformer, Upsample
from keras_cv.src.models.stable_diffusion.padded_conv2d import PaddedConv2D

from tfcourse import UserError

NUM_TRAIN_STEPS = 1000
# KerasCV's Stable Diffusion layers create their weights on first call, not in build(); Keras 3 warns
# once per layer. The weights are built and saved correctly (the .keras round trip is tested).
warnings.filterwarnings("ignore", message=r"`build\(\)` was called on layer '(padded_conv2d|spatial_transformer|upsample)")

# ## Noise schedules


def cosine_alphas_cumprod(num_steps=NUM_TRAIN_STEPS, offset=0.008):
    """Nichol & Dhariwal's cosine schedule (good for small pixel images): a_t for t = 0..T-1."""
    f = np.cos((np.arange(num_steps + 1) / num_steps + offset) / (1 + offset) * np.pi / 2) ** 2
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    return np.cumprod(1 - betas).astype("float32")


def scaled_linear_alphas_cumprod(num_steps=NUM_TRAIN_STEPS, beta_start=0.00085, beta_end=0.012):
    """Stable Diffusion v1's schedule (betas linear in their square root)."""
    betas = np.linspace(beta_start**0.5, beta_end**0.5, num_steps) ** 2
    return np.cumprod(1 - betas).astype("float32")


def timestep_embedding(timesteps, dim, max_period=10000):
    """Stable Diffusion's sinusoidal embedding of integer steps [B] -> [B, dim] (cosines, then sines)."""
    half = dim // 2
    frequencies = tf.exp(-math.log(max_period) * tf.range(half, dtype=tf.float32) / half)
    angles = tf.cast(tf.reshape(timesteps, (-1, 1)), tf.float32) * frequencies
    return tf.concat([tf.cos(angles), tf.sin(angles)], axis=-1)


def _alphas_at(alphas_cumprod, timesteps, x0):
    """a_t per example, shaped to broadcast over x0 [B, ...]."""
    return tf.reshape(tf.gather(tf.constant(alphas_cumprod, x0.dtype), timesteps), (-1,) + (1,) * (len(x0.shape) - 1))


def add_noise(x0, noise, timesteps, alphas_cumprod):
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise, per example."""
    a = _alphas_at(alphas_cumprod, timesteps, x0)
    return tf.sqrt(a) * x0 + tf.sqrt(1 - a) * noise


def velocity(x0, noise, timesteps, alphas_cumprod):
    """v = sqrt(a_t) noise - sqrt(1 - a_t) x0 (Salimans & Ho 2022), per example."""
    a = _alphas_at(alphas_cumprod, timesteps, x0)
    return tf.sqrt(a) * noise - tf.sqrt(1 - a) * x0


def noised(x0, alphas_cumprod, time_width, seed, prediction="epsilon"):
    """-> (x_t, timestep embedding, target) of float x0 [B, ...]: a random step and noise per example
    from `seed` [2]; the target is the noise ("epsilon") or the velocity ("v")."""
    timesteps = tf.random.stateless_uniform([tf.shape(x0)[0]], seed=seed, maxval=len(alphas_cumprod), dtype=tf.int32)
    noise = tf.random.stateless_normal(tf.shape(x0), seed=seed + [0, 7])
    target = noise if prediction == "epsilon" else velocity(x0, noise, timesteps, alphas_cumprod)
    return add_noise(x0, noise, timesteps, alphas_cumprod), timestep_embedding(timesteps, time_width), target


def training_batch(images, tokens, alphas_cumprod, time_width, seed, low_res=None):
    """What the small denoiser trains on: (uint8 images [B, S, S, 3], tokens) -> ({"noisy_images",
    "timestep_embedding", "tokens"}, the velocity v). With `low_res` (a super-resolution stage) x0 is
    the images' `residual_over_upsampled` low-res versions."""
    x0 = to_unit_range(images) if low_res is None else residual_over_upsampled(images, low_res)
    x_t, time, v = noised(x0, alphas_cumprod, time_width, seed, prediction="v")
    return {"noisy_images": x_t, "timestep_embedding": time, "tokens": tokens}, v


def to_unit_range(images):
    """uint8 images -> float32 in [-1, 1], the small models' pixel space."""
    return tf.cast(images, tf.float32) / 127.5 - 1


# ## Super-resolution stages
# A stage draws the residual over its input's bilinear upsampling (as SRDiff, Li et al. 2022), so it
# starts at bilinear quality: drawing whole 64 px images, a stage trained for 1,250 steps was 2.5-3.5x
# further from the real images than bilinear upsampling (mean absolute error 40.7 grey levels
# against 7.2). The residual is scaled up towards an image's spread: on the assets' training images
# its standard deviation is 0.096 in [-1, 1] units, an image's 0.48.
RESIDUAL_SCALE = 4.0


def upsampled(low_res, size):
    """uint8 low-resolution images [B, s, s, 3] -> bilinear to `size` x `size`, in [-1, 1]."""
    return tf.image.resize(to_unit_range(low_res), (size, size), method="bilinear")


def residual_over_upsampled(images, low_res):
    """A super-resolution stage's x0: what `images` (uint8) add to `low_res` upsampled, x RESIDUAL_SCALE."""
    return (to_unit_range(images) - upsampled(low_res, tf.shape(images)[1])) * RESIDUAL_SCALE


def noise_augmented(low_res, size, levels, alphas_cumprod, time_width, seed):
    """A super-resolution stage's conditioning, as DeepFloyd IF makes it: the low-resolution images
    (uint8 [B, s, s, 3]) upsampled (bilinear) to `size` and noised to step `levels` [B] (0: a little
    noise, a_0 ~ 1) -> {"low_res", "augmentation_embedding"}. Trained on random levels, the stage
    learns not to trust its input's every pixel, so the base stage's flaws are not copied upward."""
    clean = upsampled(low_res, size)
    levels = tf.cast(levels, tf.int32)
    noise = tf.random.stateless_normal(tf.shape(clean), seed=seed)
    return {"low_res": add_noise(clean, noise, levels, alphas_cumprod),
            "augmentation_embedding": timestep_embedding(levels, time_width)}


def dreambooth_mix(instance, classes, batch_size, prior_loss_weight, seed):
    """DreamBooth's batches, endless: (x, tokens, *extra, weight [B, 1, 1]). `instance` and `classes`
    are (x [n, ...], tokens [n, L], *extra per example) of the subject's images with the instance
    prompt and of the model's own class images with the class prompt. With prior preservation half
    of each batch is class images weighted `prior_loss_weight`; without (weight 0) every example is
    an instance image."""
    def stream(parts, weight, count, stream_seed):
        ds = tf.data.Dataset.from_tensor_slices(tuple(parts)).shuffle(len(parts[0]), seed=stream_seed).repeat()
        return ds.map(lambda *item: (*item, tf.constant(weight, tf.float32))).batch(count)

    half = batch_size // 2 if prior_loss_weight else batch_size
    streams = [stream(instance, 1.0, half, seed)]
    if prior_loss_weight:
        streams.append(stream(classes, prior_loss_weight, batch_size - half, seed + 1))

    def joined(*batches):
        *parts, weight = (tf.concat([b[i] for b in batches], 0) for i in range(len(instance) + 1))
        return (*parts, tf.reshape(weight, (-1, 1, 1)))  # per example, over its pixels

    return tf.data.Dataset.zip(tuple(streams)).map(joined)


# ## The small text-to-image model


@dataclasses.dataclass(frozen=True)
class SmallConfig:
    image_size: int = 32
    patch_size: int = 2  # the UNet runs at image_size / patch_size
    channels: tuple = (64, 96, 128)  # per UNet level, at 16, 8 and 4 px at 32 / 2 (multiples of 32: GroupNorm's groups)
    attention: tuple = (False, True, True)  # a SpatialTransformer (self- and cross-attention) per level
    heads: int = 4
    text_width: int = 128
    text_layers: int = 2
    time_width: int = 128


SMALL_SIZES = {
    "small": SmallConfig(),
    # tiny (smoke runs and tests): attention in the middle block only. Each UNet's first train step is mostly
    # tracing, and with a SpatialTransformer at level 1 too (222 variables, not 144) the cascade's smoke run
    # took 172 s instead of 114 s
    "tiny": SmallConfig(channels=(32, 32), attention=(False, False), heads=2, text_width=32, text_layers=1, time_width=32),
}


@keras.saving.register_keras_serializable("tfcourse")
class Patches(keras.layers.Layer):
    """size x size pixel patches as channels (space-to-depth), or back (`inverse`): the UNet works on patches."""

    def __init__(self, inverse=False, size=2, **kwargs):
        super().__init__(**kwargs)
        self.inverse, self.size = inverse, size

    def call(self, x):
        return tf.nn.depth_to_space(x, self.size) if self.inverse else tf.nn.space_to_depth(x, self.size)

    def get_config(self):
        return {**super().get_config(), "inverse": self.inverse, "size": self.size}


def small_text_encoder(vocabulary_size, sequence_length, config):
    """Token ids [B, L] -> the text encoding [B, L, text_width] the UNet attends to."""
    tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocabulary_size, sequence_length, config.text_width,
                                                   name="token_and_position")(tokens)
    for i in range(config.text_layers):
        x = keras_hub.layers.TransformerEncoder(2 * config.text_width, config.heads, name=f"transformer_{i}")(x)
    return keras.Model(tokens, keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x), name="text_encoder")


def small_unet(config, sequence_length, low_res=False):
    """(noisy images [B, S, S, 3], timestep embedding [B, time_width], context [B, L, text_width]) -> v;
    with `low_res` (a super-resolution stage) also the noise-augmented upsampled low-resolution image
    [B, S, S, 3], joined to the noisy image as channels, and its augmentation level's embedding
    [B, time_width], added to the timestep's (as DeepFloyd IF's stage II takes them); such a stage
    predicts the v of the residual over the upsampled image (`residual_over_upsampled`).

    It predicts the velocity v, not the noise: near pure noise, an error in predicted noise is
    multiplied by 1 / sqrt(a_t) in the image it implies (about 30x at t = 980 of the cosine schedule),
    and a 24-epoch noise-predicting model sampled 2 px checkerboards; v there is about -x0.

    Stable Diffusion's UNet in miniature: a ResBlock (with the timestep) and optionally a
    SpatialTransformer (attending to the text) per level, strided convolutions down, two blocks per
    level back up joined with the skips, at half the image's resolution (2 x 2 patches).

    As Imagen and SDXL do, the mean of the text encoding is added to the timestep embedding, so every
    ResBlock sees the caption: with the text in attention only, at 4 px, a 15-epoch model drew the
    colour and side asked for every time but the digit at chance (0.10). Added alone, it still did
    not learn the digit: on noised test images (t = 700 of 1000) its estimate of the clean image showed
    the right digit as often with the caption as with an empty one (0.15 and 0.16 after 7 epochs),
    while the caption lifted the colour from 0.65 to 0.94. So each block's output is also scaled by
    the caption and step (as ADM's scale-shift norm does), which a colour needs less than a shape.
    """
    size = config.image_size
    noisy = keras.Input((size, size, 3), name="noisy_images")
    time = keras.Input((config.time_width,), name="timestep_embedding")
    context = keras.Input((sequence_length, config.text_width), name="context")
    t = keras.layers.Dense(4 * config.time_width, activation="swish", name="time_mlp_0")(time)
    t = keras.layers.Dense(4 * config.time_width, name="time_mlp_1")(t)
    inputs = [noisy, time, context]
    if low_res:
        inputs += [keras.Input((size, size, 3), name="low_res"), keras.Input((config.time_width,), name="augmentation_embedding")]
        level = keras.layers.Dense(4 * config.time_width, activation="swish", name="augmentation_mlp_0")(inputs[4])
        t = keras.layers.Add(name="time_and_augmentation")([t, keras.layers.Dense(4 * config.time_width,
                                                                                   name="augmentation_mlp_1")(level)])
    pooled_text = keras.layers.GlobalAveragePooling1D(name="text_mean")(context)
    t = keras.layers.Add(name="time_and_text")([t, keras.layers.Dense(4 * config.time_width, name="text_mlp")(pooled_text)])
    conditioning = keras.layers.Activation("swish", name="conditioning")(t)

    def block(x, channels, attend):
        x = ResBlock(channels)([x, t])
        # KerasCV's ResBlock only adds the embedding; a scale (ADM's AdaGN, FiLM) lets it switch features on and off
        scale = keras.layers.Dense(channels, kernel_initializer="zeros")(conditioning)  # starts as the identity
        x = x * (1 + keras.layers.Reshape((1, 1, channels))(scale))
        return SpatialTransformer(config.heads, channels // config.heads)([x, context]) if attend else x

    x = keras.layers.Concatenate(name="with_low_res")([noisy, inputs[3]]) if low_res else noisy
    x = Patches(size=config.patch_size, name="to_patches")(x)
    x = PaddedConv2D(config.channels[0], 3, padding=1)(x)
    skips = [x]
    last = len(config.channels) - 1
    for level, (channels, attend) in enumerate(zip(config.channels, config.attention)):
        x = block(x, channels, attend)
        skips.append(x)
        if level < last:
            x = PaddedConv2D(channels, 3, strides=2, padding=1)(x)
            skips.append(x)
    x = block(x, config.channels[-1], True)
    x = ResBlock(config.channels[-1])([x, t])
    for level in reversed(range(len(config.channels))):
        for _ in range(2):
            x = block(keras.layers.Concatenate()([x, skips.pop()]), config.channels[level], config.attention[level])
        if level:
            x = Upsample(config.channels[level])(x)
    x = keras.layers.GroupNormalization(epsilon=1e-5)(x)
    x = PaddedConv2D(3 * config.patch_size**2, 3, padding=1)(keras.layers.Activation("swish")(x))
    noise = Patches(inverse=True, size=config.patch_size, name="from_patches")(x)
    return keras.Model(inputs, noise, name="unet")


def denoiser_model(unet, text_encoder):
    """The model `fit` trains: the UNet's inputs by name, with "tokens" (through `text_encoder`) in place
    of "context" ({"noisy_images", "timestep_embedding", "tokens"}, and a super-resolution stage's
    "low_res" and "augmentation_embedding") -> v."""
    inputs, call = {}, []
    for spec in unet.inputs:
        name = spec.name if spec.name != "context" else "tokens"
        source = text_encoder.inputs[0] if name == "tokens" else spec
        inputs[name] = keras.Input(source.shape[1:], dtype=source.dtype, name=name)
        call.append(text_encoder(inputs[name]) if name == "tokens" else inputs[name])
    return keras.Model(inputs, unet(call), name="denoiser")


def build_small(size, vocabulary_size, sequence_length):
    """-> (denoiser, unet, text encoder) of SMALL_SIZES[size]."""
    config = small_config(size)
    text_encoder = small_text_encoder(vocabulary_size, sequence_length, config)
    unet = small_unet(config, sequence_length)
    return denoiser_model(unet, text_encoder), unet, text_encoder


def small_config(size):
    if size not in SMALL_SIZES:
        raise UserError(f"model.size = {size!r}: choose one of {sorted(SMALL_SIZES)}.")
    return SMALL_SIZES[size]


# ## Sampling and editing


SCHEDULERS = {"ddim": 0.0, "ddpm": 1.0}  # eta: the share of DDPM's posterior noise added back at each step


class Sampler:
    """DDIM sampling with classifier-free guidance, text-to-image, img2img and inpainting, for any
    text-conditioned denoiser: the small pixel model or Stable Diffusion's latent one.

    `unet(x_t, timestep embedding, context) -> noise or v` (`prediction`); `encode_text(list of prompts) -> context`;
    `encode_images(uint8 [B, H, W, 3]) -> x0` and `decode(x0) -> images in [-1, 1]` (pixels: a
    rescaling; Stable Diffusion: its VAE); `clip_x0` clips the estimated x0 to [-1, 1] (pixel space);
    `x_shape` is one x0's shape (pixels [S, S, 3]; Stable Diffusion's latents [S/8, S/8, 4]);
    `prediction`: what the UNet predicts, the noise ("epsilon", Stable Diffusion v1) or v ("v").
    """

    def __init__(self, unet, encode_text, alphas_cumprod, time_width, encode_images, decode, clip_x0, x_shape,
                 prediction="epsilon", jit_compile=False):
        self.unet, self.encode_text, self.alphas_cumprod = unet, encode_text, np.asarray(alphas_cumprod, "float64")
        self.time_width, self.encode_images, self.decode, self.clip_x0 = time_width, encode_images, decode, clip_x0
        self.x_shape, self.prediction = tuple(x_shape), prediction
        self._guided = tf.function(self._guided_prediction, reduce_retracing=True, jit_compile=jit_compile)

    def _guided_prediction(self, x, timestep, context, empty_context, guidance, condition):
        doubled = [tf.concat([c, c], 0) for c in condition]  # a super-resolution stage's low-res input, for both halves
        both = self.unet([tf.concat([x, x], 0), timestep_embedding(tf.fill([2 * tf.shape(x)[0]], timestep), self.time_width),
                          tf.concat([context, empty_context], 0), *doubled])
        with_text, without = tf.split(tf.cast(both, tf.float32), 2)  # float32 sampling, also under mixed precision
        return without + guidance * (with_text - without)

    def timesteps(self, num_steps):
        """The DDIM subsequence, ascending, from 0 to T - 1 (as KerasCV's sampler)."""
        total = len(self.alphas_cumprod)
        return np.round(np.arange(num_steps) * (total - 1) / max(num_steps - 1, 1)).astype(int)

    def generate(self, prompts, seed, num_steps=50, guidance=3.0, images=None, strength=1.0, mask=None,
                 scheduler="ddim", condition=None, low_res=None, batch_size=100):
        """uint8 [B, H, W, 3] images for `prompts`, `batch_size` at a time (batch i from seed + i).

        - text-to-image: no `images`;
        - img2img: `images` and `strength` in [0, 1]: the last round(strength * num_steps) steps are run
          from the input noised to that level; strength 1 starts from the same pure noise as
          text-to-image (the input is not used), strength 0 returns the input decoded;
        - inpainting: `images` and `mask` (float [B, H, W], 1 = repaint): every step re-imposes the
          input, noised to the step's level, outside the mask; after decoding, the input's pixels are
          put back outside it.

        The same `seed` gives the same noise, so the three differ only in what the input imposes.

        `scheduler`: "ddim" (deterministic, eta = 0) or "ddpm" (ancestral: fresh noise at every step,
        eta = 1, DDPM's posterior variance on the strided steps). `condition`: further UNet inputs
        per image (a super-resolution stage's `noise_augmented` low-res image, in the UNet's order);
        `low_res` (uint8, a super-resolution stage): x is the residual over its bilinear upsampling
        (`residual_over_upsampled`), and the images are the two added.
        """
        if not 0.0 <= strength <= 1.0:
            raise UserError(f"strength = {strength}: it must lie in [0, 1].")
        if scheduler not in SCHEDULERS:
            raise UserError(f"scheduler = {scheduler!r}: choose one of {list(SCHEDULERS)}.")
        prompts, condition = list(prompts), [np.asarray(c) for c in (condition or [])]
        parts = []
        for i in range(0, len(prompts), batch_size):
            part = slice(i, i + batch_size)
            parts.append(self._generate(prompts[part], seed + i, num_steps, guidance, None if images is None else images[part],
                                        strength, None if mask is None else mask[part], SCHEDULERS[scheduler],
                                        [tf.constant(c[part]) for c in condition], None if low_res is None else low_res[part]))
        return np.concatenate(parts)

    def _generate(self, prompts, seed, num_steps, guidance, images, strength, mask, eta, condition, low_res):
        base = None if low_res is None else upsampled(low_res, self.x_shape[0])
        # x0 is clipped so that the image it implies stays in [-1, 1]
        bounds = (-1.0, 1.0) if base is None else ((-1 - base) * RESIDUAL_SCALE, (1 - base) * RESIDUAL_SCALE)
        context = self.encode_text(prompts)
        empty = self.encode_text([""] * len(prompts))
        x0 = None if images is None else self.encode_images(images)
        shape = (len(prompts), *self.x_shape)
        noise = tf.random.stateless_normal(shape, seed=[seed, 0])
        steps = self.timesteps(num_steps)
        run = len(steps) if (x0 is None or mask is not None) else int(round(strength * len(steps)))
        if run == 0:
            return self._to_uint8(self.decode(x0))
        x = noise if run == len(steps) else add_noise(x0, noise, [steps[run - 1]] * shape[0], self.alphas_cumprod)
        latent_mask = None if mask is None else self._resize_mask(mask, shape[1:3])
        for index in reversed(range(run)):
            t = steps[index]
            a_t = self.alphas_cumprod[t]
            a_prev = self.alphas_cumprod[steps[index - 1]] if index else 1.0
            out = self._guided(x, tf.constant(t, tf.int32), context, empty, tf.constant(guidance, tf.float32), condition)
            pred_x0, eps = self._x0_and_noise(x, out, a_t, bounds)
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            x = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev - sigma**2) * eps
            if sigma:
                x += sigma * tf.random.stateless_normal(shape, seed=[seed, 1 + index])
            if latent_mask is not None:
                x = latent_mask * x + (1 - latent_mask) * (math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * noise)
        out = self._to_uint8(self.decode(x) if base is None else base + x / RESIDUAL_SCALE)
        if mask is not None:  # the input's own pixels outside the mask, exactly
            keep = np.asarray(mask, "float32")[..., None] < 0.5
            out = np.where(keep, np.asarray(images, np.uint8), out)
        return out

    def estimate_clean(self, images, prompts, timestep, seed):
        """The denoiser's one-step estimate of the clean images (uint8) from `images` noised to
        `timestep`, told `prompts` (no guidance): what it believes is under the noise at that level."""
        x0 = self.encode_images(images)
        x = add_noise(x0, tf.random.stateless_normal(tf.shape(x0), seed=[seed, 0]), [timestep] * len(prompts),
                      self.alphas_cumprod)
        time = timestep_embedding(tf.fill([len(prompts)], timestep), self.time_width)
        out = tf.cast(self.unet([x, time, self.encode_text(list(prompts))]), tf.float32)  # one pass, unguided
        return self._to_uint8(self.decode(self._x0_and_noise(x, out, self.alphas_cumprod[timestep])[0]))

    def _x0_and_noise(self, x, out, a_t, bounds=(-1.0, 1.0)):
        """(estimated x0, noise) of x_t and the UNet's prediction `out` at cumulative alpha `a_t`; x0
        clipped to `bounds` if `clip_x0`."""
        if self.prediction == "v":
            pred_x0, eps = math.sqrt(a_t) * x - math.sqrt(1 - a_t) * out, math.sqrt(1 - a_t) * x + math.sqrt(a_t) * out
        else:
            eps, pred_x0 = out, (x - math.sqrt(1 - a_t) * out) / math.sqrt(a_t)
        if self.clip_x0:
            pred_x0 = tf.clip_by_value(pred_x0, *bounds)
            eps = (x - math.sqrt(a_t) * pred_x0) / math.sqrt(1 - a_t)
        return pred_x0, eps

    @staticmethod
    def _resize_mask(mask, size):
        """A pixel mask [B, H, W] at the denoiser's resolution: a cell is repainted if any pixel of it is."""
        mask = tf.constant(np.asarray(mask, "float32")[..., None])
        factor = mask.shape[1] // size[0]
        return tf.nn.max_pool2d(mask, factor, factor, "VALID") if factor > 1 else mask

    @staticmethod
    def _to_uint8(x):
        return np.clip(np.round((np.asarray(x) + 1) * 127.5), 0, 255).astype(np.uint8)


def pixel_sampler(unet, text_encoder, tokenize, alphas_cumprod):
    """The small pixel-space model's sampler: images are x0 in [-1, 1] directly."""
    return Sampler(unet, lambda prompts: text_encoder(tokenize(prompts)), alphas_cumprod,
                   unet.inputs[1].shape[-1], encode_images=lambda images: tf.constant(np.asarray(images, "float32") / 127.5 - 1),
                   decode=lambda x: x, clip_x0=True, x_shape=unet.inputs[0].shape[1:], prediction="v")
