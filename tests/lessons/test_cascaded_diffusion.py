import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError, config
from tfcourse.data import captioned_digits
from tfcourse.lessons import cascaded_diffusion, text_to_image
from tfcourse.models import diffusion


def test_smoke_run_trains_every_stage_and_measures_fid_and_alignment(tmp_path):
    report = cascaded_diffusion.run(config.load(cascaded_diffusion.Config, base=cascaded_diffusion.SMOKE), str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "cascaded-diffusion"
    for name in ("samples.png", "super_resolution_on_real.png", "fid_and_guidance.png", "training_curves.png", "summary.md",
                 *cascaded_diffusion.STAGE_FILES.values(), "checkpoints/text_encoder/final.weights.h5"):
        assert (tmp_path / name).exists(), name
    assert "synthetic glyphs" in report["note"] and "tiny" in report["note"]

    stages = report["model"]["stages"]
    assert list(stages) == list(cascaded_diffusion.STAGES)
    steps = {stage: m["training_steps"] for stage, m in stages.items()}
    assert steps == {"base": 8, "super_resolution": 8, "super_resolution_no_augmentation": 8, "single_stage": 16}
    assert steps["single_stage"] == steps["base"] + steps["super_resolution"]  # the same training compute as the cascade

    results = report["results"]
    assert results["base (32 px)"]["image_size"] == 32 and results["cascade"]["image_size"] == 64
    assert {r["count"] for r in results.values()} == {16}
    for r in (*results.values(), *report["reference"].values()):
        assert r["fid"] >= 0 and 0 <= r["all_three"] <= min(r["digit"], r["colour"], r["position"]) <= 1
    # Tiny models trained for a few steps draw noise: far from the real images, unlike held-apart real ones
    real = report["reference"]["real validation images (64 px)"]["fid"]
    assert all(results[name]["fid"] > 3 * real for name in ("cascade", "single stage"))
    assert [r["guidance"] for r in report["guidance_sweep"]] == list(cascaded_diffusion.GUIDANCE_SWEEP)
    assert all(r["base"]["count"] == r["cascade"]["count"] == 8 for r in report["guidance_sweep"])

    # The saved stages reload (Keras safe mode) and predict as they did
    sr = keras.models.load_model(tmp_path / "super_resolution.keras")
    inputs = {name: np.random.default_rng(0).normal(size=(2, *spec.shape[1:])).astype("float32")
              for name, spec in sr.input.items() if name != "tokens"}
    inputs["tokens"] = captioned_digits.tokenizer()(["a red two on the left", ""]).numpy()
    again = keras.models.load_model(tmp_path / "super_resolution.keras")
    np.testing.assert_allclose(sr.predict(inputs, verbose=0), again.predict(inputs, verbose=0), atol=1e-6)
    assert sr.input["low_res"].shape[1:] == (64, 64, 3)


def test_every_stage_runs_at_16_px_over_one_shared_text_encoder():
    text_encoder, denoisers = cascaded_diffusion.build_stages("tiny", 32, 20)
    for stage, denoiser in denoisers.items():
        unet = denoiser.get_layer("unet")
        assert unet.get_layer("to_patches").output.shape[1:3] == (16, 16), stage
        assert denoiser.get_layer("text_encoder") is text_encoder
    assert denoisers["base"].input["noisy_images"].shape[1:] == (32, 32, 3)
    assert "low_res" in denoisers["super_resolution"].input and "low_res" not in denoisers["single_stage"].input


def test_the_super_resolution_pipeline_conditions_on_the_shrunk_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    split = captioned_digits.CaptionedSplit(images, np.array([[1, 0, 0]] * 4), np.arange(4), np.zeros(4, int),
                                            np.zeros((4, 64, 64), np.float32))
    data = config.load(text_to_image.Config).data
    alphas = diffusion.cosine_alphas_cumprod()
    pipeline = text_to_image.noising_pipeline(split, data, captioned_digits.tokenizer(), alphas, 32, 4, False, 9.0,
                                              super_resolution=(32, 0))
    inputs, v, _ = next(iter(pipeline))
    shrunk = split.downsampled(32).images
    upsampled = tf.image.resize(diffusion.to_unit_range(shrunk), (64, 64)).numpy()
    assert inputs["low_res"].shape == (4, 64, 64, 3) and v.shape == (4, 64, 64, 3)
    assert np.abs(inputs["low_res"].numpy() - upsampled).max() < 0.05  # level 0: the shrunk image, upsampled
    np.testing.assert_allclose(inputs["augmentation_embedding"], diffusion.timestep_embedding(tf.zeros(4, tf.int32), 32),
                               atol=1e-6)
    noisy = text_to_image.noising_pipeline(split, data, captioned_digits.tokenizer(), alphas, 32, 4, False, 9.0,
                                           super_resolution=(32, 999))
    assert np.abs(next(iter(noisy))[0]["low_res"].numpy() - upsampled).mean() > 0.1  # augmented: noised


def test_bad_settings_are_named():
    with pytest.raises(UserError, match="augmentation_level = 1000"):
        config.load(cascaded_diffusion.Config, overrides=["sample.augmentation_level=1000"])
    with pytest.raises(UserError, match="low_res_size = 40"):
        config.load(cascaded_diffusion.Config, overrides=["model.low_res_size=40"])
    with pytest.raises(UserError, match="scheduler"):
        config.load(cascaded_diffusion.Config, overrides=["sample.scheduler=euler"])
