import json
import os

import numpy as np
import PIL.Image
import pytest

from tfcourse import UserError, cli, config
from tfcourse.data import masks
from tfcourse.lessons import segment_anything

MODELS = ("box_prompt_alone", "unet", "sam_fine_tuned", "sam_scratch")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("segment-anything-smoke")
    return run_dir, segment_anything.run(config.load(segment_anything.Config, base=segment_anything.SMOKE), str(run_dir))


def test_smoke_run_writes_the_table_plots_and_checked_exports(smoke_run):
    tmp_path, report = smoke_run
    assert json.load(open(tmp_path / "report.json"))["lesson"] == "segment-anything"
    for name in ("training_curves.png", "masks.png", "prompts.png", "summary.md", "export/export_metrics.json",
                 "export/image_encoder/saved_model.pb", "export/prompt_decoder/saved_model.pb",
                 "export/prompt_decoder.tflite", "checkpoints/embeddings/test.npy",
                 "checkpoints/voc/ImageSets/Segmentation/test.txt"):
        assert os.path.exists(tmp_path / name), name
    assert not os.path.exists(tmp_path / "export.tmp")
    # 6 shapes of each of 3 classes split 4 / 1 / 1 (by source), pasted 2, 2 and 2 times
    assert report["data"]["split_sizes"] == {"train": 24, "validation": 6, "test": 6}
    assert report["data"]["num_skipped"] == 0
    assert "randomly initialised" in report["note"] and "generated shapes" in report["note"]
    assert list(report["metrics"]) == list(MODELS)
    for name in MODELS:
        test = report["metrics"][name]["test"]
        assert 0 <= test["miou"] <= 1 and 0 <= test["dice"] <= 1 and 0 <= test["pixel_accuracy"] <= 1
    # the box prompt filled in covers the whole object: its object IoU is the object's share of its box
    assert 0.3 < report["metrics"]["box_prompt_alone"]["test"]["object_iou"] < 1
    assert report["models"]["sam_fine_tuned"]["trained"] == "mask decoder"
    assert report["models"]["sam_fine_tuned"]["parameters"] == report["models"]["sam_scratch"]["parameters"] > 0
    exported = report["export"]
    assert report["exported_sam"] in ("sam_fine_tuned", "sam_scratch")
    assert exported["image_encoder"]["max_abs_diff"] <= 1e-4
    for fmt, bound in (("prompt_decoder", 1e-4), ("prompt_decoder_tflite", 1e-4)):
        assert set(exported[fmt]["max_abs_diff"]) == {"box_masks", "box_iou_pred", "points_masks", "points_iou_pred"}
        assert max(exported[fmt]["max_abs_diff"].values()) <= bound
        keras_miou = report["metrics"][report["exported_sam"]]["test"]["miou"]
        assert exported[fmt]["test_miou"] == pytest.approx(keras_miou, abs=1e-3)
    assert "DELEGATE" not in exported["prompt_decoder_tflite"]["ops"] and "FULLY_CONNECTED" in exported["prompt_decoder_tflite"]["ops"]
    assert set(report["speed_seconds"]) == {"image_encoder_keras", "prompt_decoder_keras", "prompt_decoder_tflite"}
    assert "| sam_scratch |" in open(tmp_path / "summary.md").read()


def test_predict_prompts_the_exported_sam_on_images_of_any_shape(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    voc = run_dir / "checkpoints" / "voc"
    name = (voc / "ImageSets" / "Segmentation" / "test.txt").read_text().split()[0]
    image = np.asarray(PIL.Image.open(voc / "JPEGImages" / f"{name}.jpg"))  # 64 x 64, the run's size
    box = tuple(segment_anything.exact_boxes((masks.read_label_map(str(voc / "SegmentationClass" / f"{name}.png")) == 1)
                                             [None].astype(np.uint8))[0])
    PIL.Image.fromarray(image).save(tmp_path / "same.png")
    PIL.Image.fromarray(image).resize((128, 128), PIL.Image.BICUBIC).save(tmp_path / "double.png")
    wide = np.zeros((64, 100, 3), np.uint8)
    wide[:, :64] = image
    PIL.Image.fromarray(wide).save(tmp_path / "wide.png")

    def predict(file, fmt="saved_model", **prompt):
        return cli.predict_files(str(run_dir), [str(tmp_path / file)], fmt=fmt, out_dir=str(tmp_path / fmt), **prompt)[0]

    same = {fmt: predict("same.png", fmt, box=box) for fmt in ("saved_model", "tflite")}
    np.testing.assert_allclose(same["tflite"]["predicted_iou"], same["saved_model"]["predicted_iou"], atol=1e-3)
    assert same["saved_model"]["chosen_mask"] == 0 and len(same["saved_model"]["predicted_iou"]) == 4
    written = np.asarray(PIL.Image.open(same["saved_model"]["mask_png"]))
    assert written.shape == (64, 64) and set(np.unique(written)) <= {0, 255}
    assert (written == 255).mean() == pytest.approx(same["saved_model"]["mask_fraction"], abs=1e-4)
    assert os.path.isfile(same["saved_model"]["plot_png"])
    # the same picture at twice the size, with the box doubled: the prompt is rescaled with the image
    double = predict("double.png", box=tuple(2 * v for v in box))
    np.testing.assert_allclose(double["predicted_iou"], same["saved_model"]["predicted_iou"], atol=0.03)
    assert np.asarray(PIL.Image.open(double["mask_png"])).shape == (128, 128)
    # a wide image is padded to a square, and its mask comes back at its own size
    assert np.asarray(PIL.Image.open(predict("wide.png", box=box)["mask_png"])).shape == (64, 100)
    one_point = predict("same.png", points=[((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 1.0)])
    assert one_point["chosen_mask"] == 1 + int(np.argmax(one_point["predicted_iou"][1:]))  # SAM's rule for one point
    assert predict("same.png", points=[(30.0, 30.0, 1.0), (1.0, 1.0, 0.0)])["chosen_mask"] == 0

    with pytest.raises(UserError, match="does not fit .*same.png"):
        predict("same.png", box=(10.0, 10.0, 80.0, 20.0))
    with pytest.raises(UserError, match="Give one prompt"):
        predict("same.png", box=box, points=[(3.0, 3.0, 1.0)])
    with pytest.raises(UserError, match="1 to 4 points"):
        predict("same.png", points=[(3.0, 3.0, 1.0)] * 5)
    with pytest.raises(UserError, match="exports saved_model and tflite"):
        predict("same.png", "tflite-int8", box=box)
    with pytest.raises(UserError, match="prompt segment-anything runs"):
        cli.predict_files(str(tmp_path), [str(tmp_path / "same.png")], box=box)
    with pytest.raises(SystemExit) as exit_status:  # argparse: "'1,2,x,4' is not 4 comma-separated numbers"
        cli.main(["predict", str(run_dir), str(tmp_path / "same.png"), "--box", "1,2,x,4"])
    assert exit_status.value.code == 2


def test_box_filled_and_metrics_on_known_masks():
    truth = np.zeros((1, 8, 8), np.uint8)
    truth[0, 2:6, 2:4] = 1  # 8 object pixels in a 4 x 2 box
    filled = segment_anything.box_filled(np.array([[2, 2, 4, 6]], "float32"), 8)
    np.testing.assert_array_equal(filled[0], truth[0] == 1)
    wide = segment_anything.box_filled(np.array([[2, 2, 6, 6]], "float32"), 8)
    scores = segment_anything.segmentation_metrics(wide, truth)
    assert scores["object_iou"] == pytest.approx(8 / 16)
    assert scores["miou"] == pytest.approx((8 / 16 + 48 / 56) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(56 / 64)
    truth[0, 0, 0] = 255  # ignored: left out of every metric
    assert segment_anything.segmentation_metrics(wide, truth)["pixel_accuracy"] == pytest.approx(55 / 63)


def test_bad_settings_are_refused_with_the_key_named(tmp_path):
    with pytest.raises(UserError, match="data.image_size = 100"):
        config.load(segment_anything.Config, overrides=["data.image_size=100"])
    with pytest.raises(UserError, match="model.scratch_sam = 'huge'"):
        config.load(segment_anything.Config, overrides=["model.scratch_sam=huge"])
    with pytest.raises(UserError, match="data.box_jitter"):
        config.load(segment_anything.Config, overrides=["data.box_jitter=0.7"])
    with pytest.raises(UserError, match="needs data.objects"):
        segment_anything.load_data(config.load(segment_anything.Config).data, str(tmp_path))


def test_assets_pasting_keeps_leaves_and_photos_in_one_split(assets_dir, tmp_path):
    data = config.load(segment_anything.Config, config_path("segment-anything-assets.yaml")).data
    data = segment_anything.DataConfig(**{**data.__dict__, "pastes_per_object": 1, "evaluation_pastes_per_object": 1,
                                          "image_size": 64})
    summary, shown = segment_anything.write_pasted_data(data, str(tmp_path / "voc"))
    assert summary["objects"] == 180 and summary["backgrounds"] == 100 and summary["source_skipped"] == []
    assert summary["objects_per_split"] == {"train": 108, "validation": 36, "test": 36}
    assert summary["backgrounds_per_split"] == {"train": 60, "validation": 20, "test": 20}
    assert len(shown) == 8
    listed = {split: open(tmp_path / "voc" / "ImageSets" / "Segmentation" / f"{split}.txt").read().split()
              for split in ("train", "val", "test")}
    leaves = {split: {name.split("_")[1] for name in names} for split, names in listed.items()}
    assert len(leaves["train"]) == 108 and not (leaves["train"] & leaves["val"] or leaves["train"] & leaves["test"]
                                                or leaves["val"] & leaves["test"])
    # the threshold cuts a leaf, not its photo: on average 40-90 % of a 224 px PlantVillage photo is leaf
    shares = [mask.mean() for _, mask in shown]
    assert 0.3 < np.mean(shares) < 0.95 and min(shares) > 0.1


def config_path(name):
    return os.path.join(os.path.dirname(__file__), "..", "..", "configs", name)
