import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError
from tfcourse.models import sam as sam_models

SIZE = 96  # the lesson's images; the tiny SAM takes 64 px, so prompts and images are rescaled inside


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    sam = sam_models.build_sam("tiny")
    return sam, sam_models.image_encoder_model(sam, SIZE), sam_models.prompt_decoder_model(sam, SIZE)


def _images(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3)).astype("uint8")


def test_tiny_sam_takes_points_boxes_and_masks_and_answers_at_a_quarter_resolution(tiny):
    sam, encoder, decoder = tiny
    assert sam.image_size == 64 and not sam.pretrained and sam.source == "scratch:tiny"
    embeddings = encoder.predict(_images(), verbose=0)
    assert embeddings.shape == (2, 4, 4, 32)  # 64 px / 16 px patches
    none = sam_models.no_prompts(2, 16)
    prompts = {
        "points": {"points": tf.constant([[[30.0, 40.0]]] * 2), "labels": tf.ones((2, 1))},
        "box": {"boxes": tf.constant([[[[10.0, 12.0], [60.0, 70.0]]]] * 2)},
        "box and mask": {"boxes": tf.constant([[[[10.0, 12.0], [60.0, 70.0]]]] * 2),
                         "masks": tf.random.normal((2, 1, 16, 16, 1), seed=1)},
    }
    outputs = {kind: decoder({"image_embeddings": tf.constant(embeddings), **none, **p}) for kind, p in prompts.items()}
    for kind, out in outputs.items():
        assert tuple(out["masks"].shape) == (2, 4, 16, 16), kind  # 4 masks at 64 / 4
        assert tuple(out["iou_pred"].shape) == (2, 4), kind
    # each prompt changes the answer
    assert not np.allclose(outputs["points"]["masks"], outputs["box"]["masks"], atol=1e-4)
    assert not np.allclose(outputs["box"]["masks"], outputs["box and mask"]["masks"], atol=1e-4)
    upsampled = sam_models.upsample_masks(outputs["box"]["masks"], SIZE)
    assert tuple(upsampled.shape) == (2, 4, SIZE, SIZE)


def test_prompts_are_given_in_the_lesson_images_pixels(tiny):
    sam, encoder, decoder = tiny
    embeddings = tf.constant(encoder.predict(_images(1), verbose=0))
    box = np.array([[[[12.0, 24.0], [60.0, 84.0]]]], "float32")
    ours = decoder({"image_embeddings": embeddings, **sam_models.no_prompts(1, 16), "boxes": tf.constant(box)})
    prompts = sam.backbone.prompt_encoder(boxes=tf.constant(box * 64 / SIZE), points=tf.zeros((1, 0, 2)),
                                          labels=tf.zeros((1, 0)), masks=tf.zeros((1, 0, 16, 16, 1)))
    direct = sam.backbone.mask_decoder(image_embeddings=embeddings, **prompts)
    np.testing.assert_allclose(ours["masks"], direct["masks"], atol=1e-5)


def test_a_local_preset_folder_loads_the_same_model_and_a_bad_name_is_refused(tiny, tmp_path):
    sam, encoder, _ = tiny
    segmenter = keras_hub_segmenter(sam)
    segmenter.save_to_preset(str(tmp_path / "preset"))
    loaded = sam_models.build_sam(str(tmp_path / "preset"))
    assert loaded.pretrained and loaded.source.startswith("keras_hub:") and loaded.image_size == 64
    np.testing.assert_allclose(sam_models.image_encoder_model(loaded, SIZE).predict(_images(), verbose=0),
                               encoder.predict(_images(), verbose=0), atol=1e-5)
    with pytest.raises(UserError, match="neither a KerasHub SAM preset"):
        sam_models.build_sam("sam_tiny_typo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot be loaded"):
        sam_models.build_sam(str(tmp_path / "empty"))


def keras_hub_segmenter(sam):
    import keras_hub

    preprocessor = keras_hub.models.SAMImageSegmenterPreprocessor(image_converter=sam.image_converter)
    return keras_hub.models.SAMImageSegmenter(backbone=sam.backbone, preprocessor=preprocessor)


def test_dice_focal_loss_matches_its_formula():
    truth = np.array([[[1, 1], [0, 0]]], np.uint8)
    logits = np.array([[[2.0, -1.0], [0.5, -3.0]]], np.float32)
    p = 1 / (1 + np.exp(-logits[0]))
    t = truth[0].astype(float)
    dice = 1 - 2 * (p * t).sum() / (p.sum() + t.sum() + keras.config.epsilon())
    p_true = np.where(t == 1, p, 1 - p)
    focal = np.mean(-((1 - p_true) ** 2) * np.log(p_true))
    loss = sam_models.dice_focal_loss(truth, logits)
    assert float(loss[0]) == pytest.approx(20 * focal + dice, rel=1e-4)
    perfect = sam_models.dice_focal_loss(truth, np.where(truth == 1, 20.0, -20.0)[None].astype("float32")[0])
    assert float(perfect[0]) < 1e-3
    ignored = np.array([[[1, 1], [255, 0]]], np.uint8)  # 255 (ignored in metrics) counts as background in the loss
    assert float(sam_models.dice_focal_loss(ignored, logits)[0]) == pytest.approx(float(loss[0]), rel=1e-6)


def test_sam_loss_takes_the_best_alternative_and_learns_the_iou():
    truth = np.zeros((1, 8, 8), np.uint8)
    truth[0, :4] = 1
    right, wrong = np.where(truth[0] == 1, 9.0, -9.0), np.where(truth[0] == 1, -9.0, 9.0)
    # masks at a quarter resolution would be 2 x 2; the loss upsamples them to the truth's 8 x 8
    def outputs(alternatives, iou_pred):
        masks = np.stack([right] + alternatives)[None].astype("float32")
        return {"masks": masks, "iou_pred": np.asarray([iou_pred], "float32")}

    best_first = sam_models.sam_loss(truth, outputs([right, wrong, wrong], [1, 1, 0, 0]))[0]
    best_last = sam_models.sam_loss(truth, outputs([wrong, wrong, right], [1, 0, 0, 1]))[0]
    assert float(best_first[0]) == pytest.approx(float(best_last[0]), abs=1e-5) and float(best_first[0]) < 0.01
    all_wrong = sam_models.sam_loss(truth, outputs([wrong, wrong, wrong], [1, 0, 0, 0]))[0]
    assert float(all_wrong[0]) > 1
    per_example, iou = sam_models.sam_loss(truth, outputs([right, wrong, wrong], [0, 0, 0, 0]))  # IoUs predicted 0
    assert float(per_example[0]) == pytest.approx(float(best_first[0]) + 2 / 4, abs=1e-4)  # (1 + 1) / 4 squared error
    assert float(iou[0]) == pytest.approx(1.0)


def test_prompted_sam_trains_reloads_and_round_trips_its_config(tiny, tmp_path):
    sam, encoder, decoder = tiny
    images = _images(8, seed=2)
    truth = np.zeros((8, SIZE, SIZE), np.uint8)
    truth[:, 20:70, 30:80] = 1
    boxes = np.tile(np.array([[[[30.0, 20.0], [80.0, 70.0]]]], "float32"), (8, 1, 1, 1))
    embeddings = encoder.predict(images, verbose=0)
    sam.backbone.prompt_encoder.trainable = False
    model = sam_models.PromptedSAM(decoder)
    data = tf.data.Dataset.from_tensor_slices(({"image_embeddings": embeddings, "boxes": boxes}, truth)).batch(4)
    model.compile(optimizer=keras.optimizers.AdamW(3e-3))
    history = model.fit(data, validation_data=data, epochs=12, verbose=0).history
    assert set(history) == {"loss", "mask_iou", "val_loss", "val_mask_iou"}
    assert history["loss"][-1] < 0.9 * history["loss"][0]
    assert history["val_mask_iou"][-1] > history["val_mask_iou"][0]
    assert len(model.trainable_weights) == len(sam.backbone.mask_decoder.trainable_weights)  # the decoder only
    sam.backbone.prompt_encoder.trainable = True
    x = {"image_embeddings": embeddings[:2], "boxes": boxes[:2]}
    model.save(tmp_path / "decoder.keras")
    reloaded = keras.models.load_model(tmp_path / "decoder.keras")
    np.testing.assert_allclose(np.asarray(reloaded(x)["masks"]), np.asarray(model(x)["masks"]), atol=1e-6)
    rebuilt = sam_models.PromptedSAM.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config() and rebuilt.image_encoder is None


def test_prompted_sam_with_its_image_encoder_trains_whole():
    keras.utils.set_random_seed(1)
    sam = sam_models.build_sam("tiny")
    sam.backbone.prompt_encoder.mask_downscaler.trainable = False
    model = sam_models.PromptedSAM(sam_models.prompt_decoder_model(sam, SIZE),
                                   image_encoder=sam_models.image_encoder_model(sam, SIZE))
    x = {"images": _images(2), "boxes": np.array([[[[30.0, 20.0], [80.0, 70.0]]]] * 2, "float32")}
    before = [w.numpy().copy() for w in sam.backbone.image_encoder.trainable_weights]
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit(tf.data.Dataset.from_tensors((x, np.ones((2, SIZE, SIZE), np.uint8))), epochs=1, verbose=0)
    after = sam.backbone.image_encoder.trainable_weights
    assert all(not np.allclose(b, a.numpy()) for b, a in zip(before, after) if b.size > 1)


def test_small_configuration_size():
    sam = sam_models.build_sam("small")
    sam_models.prompt_decoder_model(sam, 256)  # builds the mask decoder
    assert sam.image_size == 256
    assert tuple(sam.backbone.image_encoder.output.shape[1:]) == (16, 16, 256)
    assert sam.count_params() == 8_148_528  # 4.08 M image encoder, 4.06 M mask decoder
