import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError, config
from tfcourse.data import captioned_digits
from tfcourse.lessons import dreambooth, text_to_image
from tfcourse.models import diffusion


def test_smoke_run_measures_both_arms_against_the_base(tmp_path):
    report = dreambooth.run(config.load(dreambooth.Config, base=dreambooth.SMOKE), str(tmp_path))
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "dreambooth"
    assert (tmp_path / "dreambooth.png").exists() and (tmp_path / "checkpoints" / "class_images.npy").exists()
    assert report["subject"]["instance_prompt"] == "a sks two" and report["subject"]["class_prompt"] == "a two"
    assert report["subject"]["instance_images"] == 4 and report["subject"]["class_images"] == 8
    assert "random" in report["note"]
    assert list(report["results"]) == ["before", "with_prior", "with_real_prior", "without_prior"]
    for result in report["results"].values():
        assert -1 <= result["subject_similarity"] <= 1
        assert 0 <= result["identifier_in_subject_colour"] <= 1 and 0 <= result["class_prompt_digit_accuracy"] <= 1
        assert result["class_prompts_with_attributes"]["count"] == 8
    # the arms start from the same base: what differs is the training, so both moved from it
    assert report["results"]["with_prior"] != report["results"]["before"]
    assert report["results"]["without_prior"] != report["results"]["with_prior"]


@pytest.mark.parametrize("text_encoder", [False, True])
def test_a_reloaded_base_fine_tunes_its_text_encoder_only_when_asked(tmp_path, text_encoder):
    denoiser, unet, encoder = diffusion.build_small("tiny", len(captioned_digits.VOCABULARY) + 2,
                                                    captioned_digits.SEQUENCE_LENGTH)
    encoder.trainable = False  # as the text-to-image run saves it
    denoiser.save(tmp_path / "text_to_image.keras")
    base = keras.models.load_model(tmp_path / "text_to_image.keras")
    t = dataclasses.replace(config.load(dreambooth.Config).train, text_encoder=text_encoder)
    dreambooth.compile_fine_tuning(base, t, tf.distribute.get_strategy())
    trained = {id(v) for v in base.trainable_variables}
    encoder_weights = base.get_layer("text_encoder").weights
    assert all(id(v) in trained for v in base.get_layer("unet").trainable_weights)
    assert sum(id(v) in trained for v in encoder_weights) == (len(encoder_weights) if text_encoder else 0)
    assert len(trained) == len(unet.trainable_weights) + (len(encoder.weights) if text_encoder else 0)


def test_batches_mix_instance_and_weighted_class_images():
    masks = np.zeros((4, 32, 32), np.float32)
    masks[:, 8:24, 4:8] = 1.0
    instance = {"images": np.full((4, 32, 32, 3), 10, np.uint8), "masks": masks, "digit": 7}
    class_images = np.full((6, 32, 32, 3), 200, np.uint8)
    class_images[:, 8:24, 20:24] = list(captioned_digits.COLOURS.values())[0]  # a red stroke: only image 0 and 4 ask red
    attributes = dreambooth.class_attributes(7, 6)
    classes = {"images": class_images, "attributes": attributes,
               "masks": captioned_digits.estimated_masks(class_images, attributes[:, 1])}
    tokenize = captioned_digits.tokenizer()
    vocabulary = tokenize.get_vocabulary()
    alphas = diffusion.cosine_alphas_cumprod()
    batches = list(dreambooth.dreambooth_pipeline(instance, classes, 1, tokenize, alphas, 32, 8, 0.5).take(50))
    class_prompts = dreambooth.class_prompts(7, 6)
    assert class_prompts[:2] == ["a red seven on the left", "a green seven on the left"] and len(set(class_prompts)) == 6
    np.testing.assert_array_equal(attributes[:, 1], [0, 1, 2, 3, 0, 1])
    emptied, bare = 0, 0
    digit_weight = 1 + dreambooth.DIGIT_LOSS_WEIGHT
    for inputs, v, weights in batches:
        words = [" ".join(vocabulary[i] for i in row if i) for row in inputs["tokens"].numpy()]
        assert all(w in ("a sks seven", "") for w in words[:4]), words  # each caption kept, or emptied
        assert all(w in (*class_prompts, "a seven", "") for w in words[4:]), words  # also the bare class prompt
        emptied += words.count("")
        bare += words.count("a seven")
        assert weights.shape == (8, 32, 32) and v.shape == (8, 32, 32, 3)
        weights = weights.numpy()
        # instance images: 1 + DIGIT_LOSS_WEIGHT on their digit's mask; class images: times prior_loss_weight 0.5
        np.testing.assert_allclose(weights[:4], np.broadcast_to(1 + dreambooth.DIGIT_LOSS_WEIGHT * masks[0], (4, 32, 32)))
        assert set(np.unique(weights[4:]).round(4)) <= {0.5, round(0.5 * digit_weight, 4)}
    assert 0.05 < emptied / 400 < 0.15  # dreambooth.CAPTION_DROPOUT of them, as in the base model's training
    assert 0.3 < bare / 200 < 0.6  # each class image under its own caption or under "a seven"
    inputs, _, weights = next(iter(dreambooth.dreambooth_pipeline(instance, classes, 1, tokenize, alphas, 32, 8, 0.0)))
    assert weights.numpy()[:, 0, 0].tolist() == [1.0] * 8 and inputs["tokens"].shape == (8, 8)


def test_class_image_masks_are_estimated_from_the_colour_asked():
    images = np.full((2, 32, 32, 3), 100, np.uint8)
    red = list(captioned_digits.COLOURS.values())[0]
    images[:, 5:10, 5:7] = red
    masks = captioned_digits.estimated_masks(images, [0, 2])  # the first asked red, the second blue
    assert masks.shape == (2, 32, 32)
    assert masks[0, 5:10, 5:7].min() == 1.0 and masks[0, 20:, 20:].max() == 0.0
    assert masks[1].max() == 0.0  # red strokes are not a blue digit


def test_a_base_run_without_its_models_is_refused(tmp_path):
    model = config.load(dreambooth.Config, overrides=[f"model.base_run={tmp_path}"]).model
    with pytest.raises(UserError, match="has no text_to_image.keras"):
        dreambooth.load_base(model)
    with pytest.raises(UserError, match="data.subject_digit"):
        config.load(dreambooth.Config, overrides=["data.subject_digit=12"])


def test_assets_config_uses_the_text_to_image_data_and_a_real_embedding(assets_dir):
    configs = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    cfg = config.load(dreambooth.Config, os.path.join(configs, "dreambooth-assets.yaml"))
    base = config.load(text_to_image.Config, os.path.join(configs, "text-to-image-assets.yaml")).data
    assert cfg.model.base_run == "saved_models/text-to-image" and cfg.data.max_digits == 0
    assert os.path.isdir(cfg.data.digits) and os.path.isdir(cfg.data.backgrounds)
    assert os.path.isfile(cfg.model.embedding_source) and cfg.model.embedding_source.endswith(".tflite")
    # the same digits, photos and seed, so the same splits: the subject is a test digit the base never saw
    assert (cfg.data.digits, cfg.data.backgrounds, cfg.data.seed) == (base.digits, base.backgrounds, base.seed)
