import json
import os

import keras
import numpy as np
import pytest

from tfcourse import UserError, cli, config, explain
from tfcourse.lessons import interpret


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("interpret")
    report = interpret.run(config.load(interpret.Config, base=interpret.SMOKE), str(run_dir))
    return run_dir, report


def test_known_answer_saliency_falls_on_the_deciding_object(smoke_run):
    run_dir, report = smoke_run
    known = report["known_answer"]
    shares, chance = known["mean_share_inside_box"], known["chance_share"]
    print(f"\nShare of saliency mass inside the deciding object's box (chance {chance:.3f}), "
          f"{known['num_test_images']} held-out images, test accuracy {known['test_accuracy']:.3f}: "
          + ", ".join(f"{m} {s:.3f}" for m, s in shares.items()))
    assert known["test_accuracy"] >= 0.95
    assert chance == pytest.approx(16**2 / 40**2)
    for method in ("vanilla", "smoothgrad"):
        assert shares[method] > 0.5 and shares[method] > 3 * chance, method
    assert shares["gradcam"] > 2.5 * chance  # coarser: a 20x20 map upsampled; about 0.5 measured
    assert known["gradcam_layer"] == "small_cnn/conv3"
    assert report["export"]["float32"]["max_abs_diff"] <= 1e-4
    for name in ("report.json", "summary.md", "training_curves.png", "saliency_share_inside_box.png",
                 "checkpoints/trained/best.keras", "export/saved_model/saved_model.pb", "export/labels.txt"):
        assert os.path.exists(run_dir / name), name
    pngs = [p for picture in report["pictures"] for p in picture["pngs"]]
    assert len(pngs) == 3 * 4 and all(os.path.getsize(p) > 1000 for p in pngs)  # 3 methods + 1 activation grid


def test_the_run_dir_reloads_and_explains_new_held_out_images(smoke_run):
    run_dir, _ = smoke_run
    run = explain.load_run(str(run_dir))
    assert run.class_names == interpret.CLASS_NAMES and run.lesson == "interpret"
    images, labels, boxes = interpret.known_answer_images(60, 40, 16, seed=99)  # never seen in training
    share = explain.mass_inside_box(explain.vanilla_gradients(run.model, images, labels), boxes).mean()
    print(f"\nVanilla-gradient share inside the box on 60 new images: {share:.3f} (chance 0.160)")
    assert share > 0.5


def test_tfcourse_explain_command(smoke_run, tmp_path, capsys):
    run_dir, _ = smoke_run
    images, _, _ = interpret.known_answer_images(1, 40, 16, seed=5)
    keras.utils.save_img(str(tmp_path / "one.png"), images[0])
    (tmp_path / "bad.png").write_text("not a png")
    out = tmp_path / "out"
    argv = ["explain", str(run_dir), str(tmp_path / "one.png"), str(tmp_path / "bad.png"), "--out", str(out),
            "--methods", "vanilla", "gradcam", "--layers", "conv1"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"PNGs written to {out}" in printed
    summary = json.loads(printed[printed.index("{"):])
    assert summary["num_skipped"] == 1 and len(summary["images"]) == 1
    assert sorted(os.listdir(out)) == ["000_one_activations_small_cnn_conv1.png", "000_one_gradcam.png", "000_one_vanilla.png"]
    assert cli.main(["explain", str(tmp_path), str(tmp_path / "one.png")]) == 2  # no run there


def test_the_lesson_explains_another_run(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    images, _, _ = interpret.known_answer_images(2, 40, 16, seed=6)
    for i, image in enumerate(images):
        keras.utils.save_img(str(tmp_path / f"img{i}.png"), image)
    cfg = config.load(interpret.Config, overrides=[f"explain.run_dir={run_dir}", f"explain.images=[{tmp_path}]",
                                                    "explain.methods=[smoothgrad]", "explain.smoothgrad_samples=2"])
    report = interpret.run(cfg, str(tmp_path / "explained"))
    assert len(report["explained"]["images"]) == 2 and report["explained"]["num_skipped"] == 0
    assert os.path.isfile(tmp_path / "explained" / "explanations" / "000_img0_smoothgrad.png")


def test_known_answer_images_put_the_deciding_object_in_its_box():
    images, labels, boxes = interpret.known_answer_images(50, 40, 16, seed=1)
    assert images.dtype == np.uint8 and images.shape == (50, 40, 40, 3) and 15 < labels.sum() < 35
    margin = interpret.TILE_MARGIN
    for image, label, (top, left, bottom, right) in zip(images, labels, boxes):
        white = image.min(-1) >= 220  # only the deciding object is white
        assert white.any() and not white[:top].any() and not white[bottom:].any()
        assert not white[:, :left].any() and not white[:, right:].any()
        corner = white[top + margin, left + margin]  # a square fills its corner; a circle does not
        assert corner == (interpret.CLASS_NAMES[label] == "square")


def test_bad_configs_are_refused():
    with pytest.raises(UserError, match="explain.methods"):
        config.load(interpret.Config, overrides=["explain.methods=[occlusion]"])
    with pytest.raises(UserError, match="explain.images is empty"):
        config.load(interpret.Config, overrides=["explain.run_dir=somewhere"])
    with pytest.raises(UserError, match="object_size"):
        config.load(interpret.Config, overrides=["known_answer.object_size=4"])
