"""Measures the crop-disease lesson on the real offline assets and prints the figures.

    TFCOURSE_ASSETS=../shared/assets python benchmarks/crop_disease_assets.py [--run-dir DIR] [--skip-run]

1. `tfcourse run crop-disease --config configs/crop-disease-assets.yaml` (wall time measured);
2. `tfcourse evaluate` of every export format on images the model never trained on: the
   held-out test photos as a folder of their own, and the same photos shifted (rotated 90
   degrees, brightness +20, re-encoded as JPEG quality 70). Only 180 real photos of these four
   classes exist offline, so "other images" are these two sets.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import tensorflow as tf

from tfcourse import config as config_lib
from tfcourse.cli import evaluate_run
from tfcourse.data import images
from tfcourse.lessons.crop_disease import Config

CONFIG = "configs/crop-disease-assets.yaml"


def held_out_folders(data, root):
    folder = images.scan_image_folder(data.source)
    test = images.stratified_split(folder.labels, data.validation_fraction, data.test_fraction, data.seed)["test"]
    for name in ("held_out", "held_out_shifted"):
        for class_name in folder.class_names:
            os.makedirs(os.path.join(root, name, class_name), exist_ok=True)
    for i in test:
        path, class_name = folder.files[i], folder.class_names[folder.labels[i]]
        base = os.path.basename(path)
        os.symlink(path, os.path.join(root, "held_out", class_name, base))
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        shifted = tf.cast(tf.clip_by_value(tf.cast(tf.image.rot90(image), tf.float32) + 20, 0, 255), tf.uint8)
        tf.io.write_file(os.path.join(root, "held_out_shifted", class_name, base + ".jpg"), tf.io.encode_jpeg(shifted, quality=70))
    return {name: os.path.join(root, name) for name in ("held_out", "held_out_shifted")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", default="saved_models/crop-disease-assets")
    parser.add_argument("--skip-run", action="store_true", help="measure an existing run directory")
    args = parser.parse_args()
    figures = {}
    if not args.skip_run:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tfcourse", "run", "crop-disease", "--config", CONFIG, "--out", args.run_dir], check=True)
        figures["wall_seconds"] = round(time.perf_counter() - start, 1)
    report = json.load(open(os.path.join(args.run_dir, "report.json")))
    figures["test_accuracy"] = {name: m["test"]["accuracy"] for name, m in report["metrics"].items()}
    figures["export"] = {v: {k: report["export"][v][k] for k in ("accuracy", "size_bytes", "max_abs_diff")}
                         for v in ("saved_model", "float32", "dynamic_range", "int8")}
    figures["int8_size_ratio"] = report["export"]["float32"]["size_bytes"] / report["export"]["int8"]["size_bytes"]
    figures["timings_seconds"] = report["timings_seconds"]
    data = config_lib.load(Config, CONFIG).data
    with tempfile.TemporaryDirectory() as root:
        figures["evaluate"] = {
            name: {fmt: evaluate_run(args.run_dir, folder, fmt)["accuracy"] for fmt in ("saved_model", "tflite", "tflite-dynamic", "tflite-int8")}
            for name, folder in held_out_folders(data, root).items()
        }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
