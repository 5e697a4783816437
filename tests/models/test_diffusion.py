import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_cv.src.models.stable_diffusion.constants import _ALPHAS_CUMPROD
from keras_cv.src.models.stable_diffusion.stable_diffusion import StableDiffusion

from tfcourse import UserError
from tfcourse.data import captioned_digits
from tfcourse.models import diffusion

TIME_WIDTH = 32


def test_schedules_match_stable_diffusion_and_run_from_clean_to_noise():
    np.testing.assert_allclose(diffusion.scaled_linear_alphas_cumprod(), _ALPHAS_CUMPROD, rtol=1e-5)
    cosine = diffusion.cosine_alphas_cumprod()
    assert cosine.shape == (1000,) and np.all(np.diff(cosine) < 0)
    assert cosine[0] > 0.999 and cosine[-1] < 1e-6


def test_timestep_embedding_is_keras_cv_s():
    keras_cv_embedding = StableDiffusion._get_timestep_embedding(None, 981, 2)
    np.testing.assert_allclose(diffusion.timestep_embedding(tf.constant([981, 981]), 320), keras_cv_embedding, atol=1e-5)


def test_add_noise_mixes_by_the_schedule():
    alphas = diffusion.cosine_alphas_cumprod()
    x0, noise = tf.ones((2, 4, 4, 3)), tf.fill((2, 4, 4, 3), 2.0)
    noisy = diffusion.add_noise(x0, noise, tf.constant([0, 500]), alphas).numpy()
    for i, t in enumerate((0, 500)):
        np.testing.assert_allclose(noisy[i], math.sqrt(alphas[t]) + 2 * math.sqrt(1 - alphas[t]), rtol=1e-5)


def test_tiny_model_shapes_and_keras_round_trip(tmp_path):
    vocabulary_size = len(captioned_digits.tokenizer().get_vocabulary())
    denoiser, unet, text_encoder = diffusion.build_small("tiny", vocabulary_size, captioned_digits.SEQUENCE_LENGTH)
    inputs = {"noisy_images": np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32"),
              "timestep_embedding": diffusion.timestep_embedding(tf.constant([3, 700]), TIME_WIDTH).numpy(),
              "tokens": captioned_digits.tokenizer()(["a red seven on the left", ""]).numpy()}
    out = denoiser.predict(inputs, verbose=0)
    assert out.shape == (2, 32, 32, 3)
    assert text_encoder.output.shape[1:] == (captioned_digits.SEQUENCE_LENGTH, 32)
    scales = [layer for layer in unet.layers if isinstance(layer, keras.layers.Dense) and not layer.kernel.numpy().any()]
    assert len(scales) == 7  # one per block, zero at the start: each block's output is first left as it is
    for layer in scales:
        layer.kernel.assign(np.random.default_rng(1).normal(0, 0.5, layer.kernel.shape))
    scaled = denoiser.predict(inputs, verbose=0)
    assert np.abs(scaled - out).mean() > 1e-3  # the scales act
    out = scaled
    denoiser.save(tmp_path / "denoiser.keras")
    reloaded = keras.models.load_model(tmp_path / "denoiser.keras")
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), out, atol=1e-6)
    with pytest.raises(UserError, match="model.size = 'huge'"):
        diffusion.build_small("huge", vocabulary_size, 8)


def test_every_resblock_sees_the_caption_through_the_timestep_embedding():
    """What the ResBlocks get as their embedding: the timestep MLP's output plus a projection of the
    caption's mean encoding, so a caption reaches every level, not just those that attend to it."""
    unet = diffusion.small_unet(diffusion.SMALL_SIZES["tiny"], sequence_length=4)
    embedding = keras.Model(unet.inputs, unet.get_layer("time_and_text").output)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    time = diffusion.timestep_embedding(tf.constant([500, 500]), TIME_WIDTH).numpy()
    context = rng.normal(size=(2, 4, 32)).astype("float32")
    got = embedding.predict([x, time, context], verbose=0)
    time_only = unet.get_layer("time_mlp_1")(unet.get_layer("time_mlp_0")(time)).numpy()
    np.testing.assert_allclose(got, time_only + unet.get_layer("text_mlp")(context.mean(1)).numpy(), atol=1e-5)
    assert np.abs(got[0] - got[1]).mean() > 1e-3  # same step, different captions


def test_velocity_recovers_the_clean_image_and_the_noise():
    alphas = diffusion.cosine_alphas_cumprod()
    rng = np.random.default_rng(0)
    x0, noise = (tf.constant(rng.normal(size=(3, 4, 4, 3)), tf.float32) for _ in range(2))
    t = tf.constant([0, 500, 990])
    x_t, v = diffusion.add_noise(x0, noise, t, alphas), diffusion.velocity(x0, noise, t, alphas)
    a = np.sqrt(alphas[t.numpy()]).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(a * x_t - np.sqrt(1 - a**2) * v, x0, atol=1e-4)
    np.testing.assert_allclose(np.sqrt(1 - a**2) * x_t + a * v, noise, atol=1e-4)


def timesteps_of(embedding):
    """The integer steps [B] a timestep embedding [B, TIME_WIDTH] encodes, read back from its lowest-frequency sine."""
    half = TIME_WIDTH // 2
    lowest = math.exp(-math.log(10000) * (half - 1) / half)
    return tf.cast(tf.round(tf.asin(embedding[:, -1]) / lowest), tf.int32)


class OracleUNet:
    """A stand-in denoiser with the UNet's signature that knows the clean image: it predicts the
    exact noise (or v) of x_t for `target` (it reads t back from the lowest-frequency sine of the embedding)."""

    def __init__(self, target, alphas, prediction):
        self.target, self.alphas, self.prediction = tf.constant(target), alphas, prediction

    def __call__(self, inputs):
        x, embedding = inputs[:2]
        return self.pointing_to(tf.tile(self.target, [tf.shape(x)[0] // self.target.shape[0], 1, 1, 1]), x, embedding)

    def pointing_to(self, x0, x, embedding):
        a = tf.reshape(tf.gather(tf.constant(self.alphas), timesteps_of(embedding)), (-1, 1, 1, 1))
        noise = (x - tf.sqrt(a) * x0) / tf.sqrt(1 - a)
        return noise if self.prediction == "epsilon" else tf.sqrt(a) * noise - tf.sqrt(1 - a) * x0


def oracle_sampler(target_uint8, prediction="epsilon"):
    alphas = diffusion.cosine_alphas_cumprod()
    target = target_uint8.astype("float32") / 127.5 - 1
    return diffusion.Sampler(OracleUNet(target, alphas, prediction), lambda prompts: tf.zeros((len(prompts), 8, 4)),
                             alphas, TIME_WIDTH, encode_images=lambda images: tf.constant(np.asarray(images, "float32") / 127.5 - 1),
                             decode=lambda x: x, clip_x0=True, x_shape=target_uint8.shape[1:], prediction=prediction)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_ddim_text_to_image_img2img_and_inpainting_with_an_oracle_denoiser(prediction):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    given = rng.integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    sampler = oracle_sampler(target, prediction)
    prompts = ["a red seven", "a blue two"]
    generated = sampler.generate(prompts, seed=3, num_steps=20)
    assert np.abs(generated.astype(int) - target).max() <= 1  # DDIM lands on what the denoiser points to
    np.testing.assert_array_equal(sampler.generate(prompts, seed=3, num_steps=20, images=given, strength=0.0), given)
    np.testing.assert_array_equal(sampler.generate(prompts, seed=3, num_steps=20, images=given, strength=1.0), generated)
    half = sampler.generate(prompts, seed=3, num_steps=20, images=given, strength=0.5)
    assert np.abs(half.astype(int) - target).max() <= 1
    mask = np.zeros((2, 8, 8), "float32")
    mask[:, 2:6, 2:6] = 1
    painted = sampler.generate(prompts, seed=3, num_steps=20, images=given, mask=mask)
    np.testing.assert_array_equal(painted[mask == 0], given[mask == 0])  # outside: the input's own pixels
    assert np.abs(painted[mask == 1].astype(int) - target[mask == 1]).max() <= 1
    with pytest.raises(UserError, match="strength = 1.5"):
        sampler.generate(prompts, seed=3, images=given, strength=1.5)
    for t in (300, 900):  # the one-step estimate from the input noised to t is what the denoiser points to
        assert np.abs(sampler.estimate_clean(given, prompts, t, seed=5).astype(int) - target).max() <= 1


def test_ddim_timesteps_are_keras_cv_s():
    sampler = oracle_sampler(np.zeros((1, 8, 8, 3), np.uint8))
    np.testing.assert_array_equal(sampler.timesteps(50)[[0, 1, -1]], [0, 20, 999])


class LowResOracle(OracleUNet):
    """A stand-in super-resolution denoiser: it points to the image it is given as its low-res input."""

    def __init__(self, alphas, prediction="v"):
        self.alphas, self.prediction = alphas, prediction

    def __call__(self, inputs):
        x, embedding, _, low_res, _ = inputs
        return self.pointing_to(low_res, x, embedding)


def pixel_stand_in(unet, x_shape, prediction="v"):
    alphas = diffusion.cosine_alphas_cumprod()
    return diffusion.Sampler(unet, lambda prompts: tf.zeros((len(prompts), 8, 4)), alphas, TIME_WIDTH,
                             encode_images=diffusion.to_unit_range, decode=lambda x: x, clip_x0=True, x_shape=x_shape,
                             prediction=prediction)


def test_ddpm_and_ddim_follow_a_conditioned_denoiser_batch_by_batch():
    rng = np.random.default_rng(0)
    low_res = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    sampler = pixel_stand_in(LowResOracle(diffusion.cosine_alphas_cumprod()), (8, 8, 3))
    condition = [diffusion.to_unit_range(low_res).numpy(), np.zeros((3, TIME_WIDTH), "float32")]
    for scheduler in diffusion.SCHEDULERS:  # each image follows its own condition, in batches of 2
        out = sampler.generate(["a seven"] * 3, seed=1, num_steps=10, scheduler=scheduler, condition=condition, batch_size=2)
        assert np.abs(out.astype(int) - low_res).max() <= 1, scheduler

    blind = pixel_stand_in(lambda inputs: tf.zeros_like(inputs[0]), (8, 8, 3))  # v = 0: the result is the noise's
    prompts = ["a seven", "a two", "a six"]
    ddim = blind.generate(prompts, seed=1, num_steps=10, batch_size=2)
    ddpm = blind.generate(prompts, seed=1, num_steps=10, scheduler="ddpm", batch_size=2)
    np.testing.assert_array_equal(ddpm, blind.generate(prompts, seed=1, num_steps=10, scheduler="ddpm", batch_size=2))
    assert np.abs(ddpm.astype(int) - ddim).mean() > 5  # fresh noise at every step
    assert np.abs(ddpm.astype(int) - blind.generate(prompts, seed=2, num_steps=10, scheduler="ddpm")).mean() > 5
    np.testing.assert_array_equal(ddim[2:], blind.generate(prompts[2:], seed=3, num_steps=10))  # batch i: seed + i
    with pytest.raises(UserError, match="scheduler = 'euler'"):
        blind.generate(prompts, seed=1, scheduler="euler")


def test_a_super_resolution_unet_takes_the_noise_augmented_low_res_image(tmp_path):
    config = dataclasses.replace(diffusion.SMALL_SIZES["tiny"], image_size=64, patch_size=4)
    tokenize = captioned_digits.tokenizer()
    unet = diffusion.small_unet(config, captioned_digits.SEQUENCE_LENGTH, low_res=True)
    denoiser = diffusion.denoiser_model(unet, diffusion.small_text_encoder(len(tokenize.get_vocabulary()),
                                                                           captioned_digits.SEQUENCE_LENGTH, config))
    assert set(denoiser.input) == {"noisy_images", "timestep_embedding", "tokens", "low_res", "augmentation_embedding"}
    assert unet.get_layer("to_patches").output.shape[1:] == (16, 16, 6 * 16)  # 4 x 4 patches of image and low-res input

    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    alphas = diffusion.cosine_alphas_cumprod()
    augmented = diffusion.noise_augmented(low, 64, tf.constant([0, 999]), alphas, TIME_WIDTH, seed=[1, 2])
    upsampled = tf.image.resize(diffusion.to_unit_range(low), (64, 64)).numpy()
    assert np.abs(augmented["low_res"][0] - upsampled[0]).max() < 0.05  # level 0: the bilinear upsampling
    assert abs(np.corrcoef(augmented["low_res"][1].numpy().ravel(), upsampled[1].ravel())[0, 1]) < 0.05  # 999: noise
    np.testing.assert_allclose(augmented["augmentation_embedding"],
                               diffusion.timestep_embedding(tf.constant([0, 999]), TIME_WIDTH), atol=1e-6)

    inputs = {"noisy_images": rng.normal(size=(2, 64, 64, 3)).astype("float32"),
              "timestep_embedding": diffusion.timestep_embedding(tf.constant([3, 700]), TIME_WIDTH).numpy(),
              "tokens": tokenize(["a red seven on the left", ""]).numpy(), **{k: v.numpy() for k, v in augmented.items()}}
    out = denoiser.predict(inputs, verbose=0)
    assert out.shape == (2, 64, 64, 3)
    other = denoiser.predict({**inputs, "low_res": inputs["low_res"][::-1]}, verbose=0)
    assert np.abs(other - out).mean() > 1e-4  # the low-res image reaches the prediction
    denoiser.save(tmp_path / "super_resolution.keras")
    reloaded = keras.models.load_model(tmp_path / "super_resolution.keras")
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), out, atol=1e-5)


def test_a_super_resolution_stage_draws_the_residual_over_the_upsampled_input():
    rng = np.random.default_rng(0)
    low_res = rng.integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    images = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    residual = diffusion.residual_over_upsampled(images, low_res).numpy()
    np.testing.assert_allclose(diffusion.upsampled(low_res, 8) + residual / diffusion.RESIDUAL_SCALE,
                               diffusion.to_unit_range(images), atol=1e-5)
    smooth = np.round(tf.image.resize(low_res, (8, 8))).astype(np.uint8)  # what bilinear upsampling already gives
    assert np.abs(diffusion.residual_over_upsampled(smooth, low_res)).max() < 0.02 * diffusion.RESIDUAL_SCALE

    alphas = diffusion.cosine_alphas_cumprod()
    inputs, v = diffusion.training_batch(images, tf.zeros((3, 8), tf.int32), alphas, TIME_WIDTH, tf.constant([1, 2]),
                                         low_res=low_res)
    a = np.sqrt(alphas[timesteps_of(inputs["timestep_embedding"]).numpy()]).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(a * inputs["noisy_images"] - np.sqrt(1 - a**2) * v, residual, atol=1e-3)  # x0: the residual

    # DDIM with a denoiser that points to the residual (handed to it as its condition) lands on the real images
    sampler = pixel_stand_in(LowResOracle(alphas), (8, 8, 3))
    condition = [residual, np.zeros((3, TIME_WIDTH), "float32")]
    drawn = sampler.generate(["a seven"] * 3, seed=1, num_steps=10, condition=condition, low_res=low_res, batch_size=2)
    assert np.abs(drawn.astype(int) - images).max() <= 1
    plain = sampler.generate(["a seven"] * 3, seed=1, num_steps=10, condition=condition, batch_size=2)
    assert np.abs(plain.astype(int) - images).mean() > 20  # read as an image, the residual is not one
