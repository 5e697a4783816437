import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError, config, train
from tfcourse.data import captioned_digits
from tfcourse.lessons import text_to_image
from tfcourse.models import diffusion


def test_smoke_run_reports_alignment_and_edits(tmp_path):
    report = text_to_image.run(config.load(text_to_image.Config, base=text_to_image.SMOKE), str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "text-to-image"
    for name in ("samples.png", "alignment.png", "editing.png", "img2img_strength.png", "training_curves.png", "summary.md",
                 "checkpoints/diffusion/final.weights.h5", "checkpoints/classifier/final.weights.h5"):
        assert (tmp_path / name).exists(), name
    assert report["data"]["split_sizes"] == {"train": 480, "validation": 30, "test": 30}
    assert len(report["data"]["held_out_combinations"]) == 2
    assert "synthetic glyphs" in report["note"] and "tiny" in report["note"]
    assert set(report["text_encoder_accuracy"]) == {"digit", "colour", "position"}
    alignment = report["alignment"]
    assert alignment["test_captions"]["count"] == 16 and alignment["held_out_combinations"]["count"] == 4
    by_guidance = report["alignment_by_guidance"]
    assert [r["guidance"] for r in by_guidance] == [1.0, 3.0, 7.5, 12.0, 20.0]
    assert by_guidance[3] == {"guidance": 12.0, **alignment["test_captions"]}  # the headline is the configured scale's
    for result in (*alignment.values(), *by_guidance, report["classifier_on_real_test_images"]):
        assert 0 <= result["all_three"] <= min(result["digit"], result["colour"], result["position"]) <= 1
    assert [r["timestep"] for r in report["caption_probe"]] == [300, 500, 700, 900]
    for r in report["caption_probe"]:
        assert 0 <= r["with_caption"] <= 1 and 0 <= r["with_empty_caption"] <= 1
    inpainting = report["editing"]["inpainting"]
    assert inpainting["max_abs_change_outside_mask"] == 0.0 and inpainting["mean_abs_change_inside_mask"] > 0.05
    sweep = report["editing"]["img2img"]
    assert [r["strength"] for r in sweep] == [0.0, 0.5, 1.0]
    assert sweep[0]["mean_abs_change"] == 0.0 and sweep[0]["mean_abs_change"] < sweep[1]["mean_abs_change"]

    # The run draws captions to PNG files (the agent's generate_image tool), and refuses words it never learned
    drawn = text_to_image.draw_files(str(tmp_path), ["a red two on the left", "a blue one"], seed=3)
    for result in drawn:
        image = keras.utils.load_img(result["image_png"])
        assert image.size == (32, 32) and result["judge_sees"].startswith("a ")
        assert set(result["judge_sees"].split()) <= set(captioned_digits.VOCABULARY)
    again = text_to_image.draw_files(str(tmp_path), ["a red two on the left", "a blue one"], out_dir=str(tmp_path / "again"), seed=3)
    for a, b in zip(again, drawn):  # the same seed draws the same images
        assert a["image_png"] != b["image_png"]
        np.testing.assert_array_equal(keras.utils.load_img(a["image_png"]), keras.utils.load_img(b["image_png"]))
    with pytest.raises(UserError, match="'a purple cat'.*not purple, cat"):
        text_to_image.draw_files(str(tmp_path), ["a purple cat"])


def test_training_captions_drop_attributes_and_validation_noise_is_fixed():
    attributes = tf.constant([[7, 0, 0], [2, 2, 1]])
    full = text_to_image.caption_strings(attributes, 0.0, 0.0, tf.constant([1, 2])).numpy()
    assert [c.decode() for c in full] == ["a red seven on the left", "a blue two on the right"]
    allowed = {"", "a seven", "a red seven", "a seven on the left", "a red seven on the left"}
    many = text_to_image.caption_strings(tf.tile(attributes[:1], [400, 1]), 0.5, 0.2, tf.constant([3, 4])).numpy()
    forms = {c.decode() for c in many}
    assert forms == allowed  # every form appears among 400 draws, and nothing else

    masks = np.zeros((6, 32, 32), np.float32)
    masks[:, 10:20, 5:8] = 0.5
    split = captioned_digits.CaptionedSplit(np.full((6, 32, 32, 3), 200, np.uint8), np.array([[1, 0, 0]] * 6),
                                            np.arange(6), np.zeros(6, int), masks)
    data = config.load(text_to_image.Config).data
    alphas = diffusion.cosine_alphas_cumprod()
    pipeline = text_to_image.noising_pipeline(split, data, captioned_digits.tokenizer(), alphas, 32, 4, False, 9.0)
    first, second = list(pipeline), list(pipeline)
    np.testing.assert_array_equal(first[0][0]["noisy_images"], second[0][0]["noisy_images"])
    inputs, v, weights = first[0]
    np.testing.assert_allclose(weights, 1 + 9.0 * masks[:4])  # the digit's pixels weigh 5.5, the rest 1
    table = diffusion.timestep_embedding(tf.range(1000), 32).numpy()
    steps = np.abs(inputs["timestep_embedding"].numpy()[:, None] - table[None]).sum(-1).argmin(-1)
    a = alphas[steps].reshape(-1, 1, 1, 1)
    x_t = inputs["noisy_images"].numpy()
    np.testing.assert_allclose(np.sqrt(a) * x_t - np.sqrt(1 - a) * v.numpy(), 200 / 127.5 - 1, atol=1e-5)  # the target is v
    assert 0.8 < np.std(np.sqrt(1 - a) * x_t + np.sqrt(a) * v.numpy()) < 1.2  # the noise it implies
    assert [len(b[1]) for b in first] == [4, 2]  # every validation image, none dropped


def test_the_text_encoder_learns_every_caption_then_is_frozen(tmp_path):
    tokenize = captioned_digits.tokenizer()
    denoiser, unet, text_encoder = diffusion.build_small("tiny", len(tokenize.get_vocabulary()),
                                                         captioned_digits.SEQUENCE_LENGTH)
    history = text_to_image.pretrain_text_encoder(text_encoder, tokenize, 30, str(tmp_path / "stage"),
                                                  train.get_strategy("default"))
    assert min(history[f"{name}_accuracy"][-1] for name in ("digit", "colour", "position")) > 0.95
    assert not text_encoder.trainable and len(denoiser.trainable_weights) == len(unet.trainable_weights)
    pooled = text_encoder(tokenize(["a red seven", "a red two", "a blue seven"])).numpy().mean(1)
    assert np.linalg.norm(pooled[0] - pooled[1]) > 0.5 * np.linalg.norm(pooled[0] - pooled[2])  # the digit is not drowned out


class KnownClassifier:
    def __init__(self, attributes):
        self.attributes = attributes

    def predict(self, images, batch_size=None, verbose=0):
        sizes = {"digit": 10, "colour": 4, "position": 2}
        return {name: np.eye(size)[self.attributes[:, i]] for i, (name, size) in enumerate(sizes.items())}


def test_judge_counts_each_attribute_and_all_three():
    truth = np.array([[1, 0, 0], [2, 1, 1], [3, 2, 0], [4, 3, 1]])
    seen = truth.copy()
    seen[0, 0] = 9  # wrong digit
    seen[1, 1] = 0  # wrong colour
    result = text_to_image.judge(KnownClassifier(seen), np.zeros((4, 32, 32, 3), np.uint8), truth)
    assert result == {"digit": 0.75, "colour": 0.75, "position": 1.0, "all_three": 0.5, "count": 4}


def test_bad_settings_are_refused_with_the_key_named():
    with pytest.raises(UserError, match="data.caption_dropout"):
        config.load(text_to_image.Config, overrides=["data.caption_dropout=1.5"])
    with pytest.raises(UserError, match="sample.strengths"):
        config.load(text_to_image.Config, overrides=["sample.strengths=[0.5, 2.0]"])
    with pytest.raises(UserError):
        config.load(text_to_image.Config, overrides=["model.size=huge"])


def test_a_short_stage_averages_over_fewer_steps_so_its_first_weights_fade():
    assert text_to_image.ema_momentum(0.999, 10_000) == 0.999
    short = text_to_image.ema_momentum(0.999, 1250)  # a super-resolution stage of the assets run
    assert 0.99 < short < 0.999 and short**1250 == pytest.approx(0.01)
    assert 0.999**1250 > 0.28  # what the first steps kept of the average before
    assert text_to_image.ema_momentum(0.5, 8) == 0.5
