"""Stable Diffusion v1's full-size pipeline with random weights: nothing here shows its image quality,
only that the real architecture builds, prompts, samples, edits and takes a DreamBooth training step
at 128 px, in mixed precision (bfloat16, as on a TPU or CPU)."""

import gzip

import numpy as np
import pytest

from tfcourse import UserError, train
from tfcourse.models import stable_diffusion


@pytest.fixture(scope="module")
def tiny_bpe(tmp_path_factory):
    """A self-made BPE merges file in CLIP's format (the real vocabulary is not in the keras-cv wheel)."""
    path = tmp_path_factory.mktemp("bpe") / "bpe_tiny.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("#version: 0.2\n" + "\n".join(["a s", "t r", "tr o", "as tro", "n au", "nau t</w>"]) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def sd(tiny_bpe):
    return stable_diffusion.StableDiffusionV1("random", image_size=128, bpe_path=tiny_bpe, jit_compile=False,
                                              dtype_policy="mixed_bfloat16")


def test_full_pipeline_with_random_weights_samples_and_edits_at_128_px(sd):
    assert not sd.pretrained and not sd.jit_compile
    assert sd.diffusion_model.layers[-1].compute_dtype == "bfloat16"
    assert sd.diffusion_model.count_params() > 850_000_000  # the real 860M UNet, not a stand-in
    tokens = sd.tokens(["an astronaut", ""])
    assert tokens.shape == (2, 77) and tokens[0, 0] == sd.tokenizer.start_of_text
    assert tokens[1, 1] == sd.tokenizer.end_of_text and (tokens[1, 1:] == sd.tokenizer.end_of_text).all()
    sampler = sd.sampler()
    image = sampler.generate(["an astronaut"], seed=0, num_steps=1, guidance=7.5)
    assert image.shape == (1, 128, 128, 3) and image.dtype == np.uint8
    source = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3)).astype(np.uint8)
    mask = np.zeros((1, 128, 128), "float32")
    mask[:, 32:96, 32:96] = 1
    painted = sampler.generate(["an astronaut"], seed=0, num_steps=1, images=source, mask=mask)
    np.testing.assert_array_equal(painted[mask == 0], source[mask == 0])
    with pytest.raises(UserError, match="tokens; Stable Diffusion takes 77"):
        sd.tokens(["astronaut " * 80])


def test_one_dreambooth_step_with_gradient_accumulation(sd):
    rng = np.random.default_rng(0)
    instance = rng.integers(0, 256, (2, 128, 128, 3)).astype(np.uint8)
    classes = rng.integers(0, 256, (2, 128, 128, 3)).astype(np.uint8)
    with train.model_scope(train.get_strategy("default")):
        model = stable_diffusion.dreambooth_model(sd)
        stable_diffusion.compile_dreambooth(model, sd, learning_rate=1e-3, gradient_accumulation_steps=2)
    inputs, noise, weights = next(iter(stable_diffusion.dreambooth_dataset(sd, instance, classes, "a sks astronaut",
                                                                           "an astronaut", 2, 0.5)))
    assert inputs["latent"].shape == (2, 16, 16, 4) and weights.numpy().reshape(-1).tolist() == [1.0, 0.5]
    kernel = sd.diffusion_model.layers[-1].trainable_weights[0]  # the UNet's last convolution
    start = kernel.numpy().copy()
    first = model.train_on_batch(inputs, noise, sample_weight=weights)
    np.testing.assert_array_equal(kernel.numpy(), start)  # accumulated, not applied yet
    model.train_on_batch(inputs, noise, sample_weight=weights)
    assert np.isfinite(first) and not np.array_equal(kernel.numpy(), start)  # applied after 2 batches
    assert len(model.trainable_weights) == len(sd.diffusion_model.trainable_weights)  # the text encoder is frozen


def test_weights_folder_and_vocabulary_are_checked_before_building(tmp_path, tiny_bpe):
    with pytest.raises(UserError, match="no kcv_encoder.h5"):
        stable_diffusion.StableDiffusionV1(str(tmp_path), image_size=128, bpe_path=tiny_bpe)
    with pytest.raises(UserError, match="bpe_simple_vocab_16e6.txt.gz"):
        stable_diffusion.StableDiffusionV1("random", image_size=128, bpe_path=str(tmp_path / "missing.txt.gz"))
    with pytest.raises(UserError, match="multiple of 128"):
        stable_diffusion.StableDiffusionV1("random", image_size=100, bpe_path=tiny_bpe)
