"""The lessons: one file each under this package, read top to bottom like a keras.io example.

Each lesson module defines `Config` (its defaults as dataclasses), `SMOKE` (the overrides of a
`--smoke` run) and `run(config, run_dir) -> report`.
"""

import importlib

LESSONS = {
    "fundamentals": (
        "fundamentals",
        "Gradient descent, activations, losses, optimizers and batch norm from their equations, checked against Keras.",
    ),
    "keywords": (
        "keywords",
        "Keyword spotting: spectrogram CNN vs YAMNet-embedding head on 1 s clips, then timestamped detections in a stream.",
    ),
    "sound-yamnet": (
        "sound_yamnet",
        "Sound classification: a head on cached YAMNet embeddings vs a spectrogram CNN; waveform-in TFLite export.",
    ),
    "crop-disease": (
        "crop_disease",
        "Leaf disease classification: pretrained backbone frozen, then fine-tuned, vs scratch; TFLite export.",
    ),
}


def load_lesson(name):
    return importlib.import_module(f"tfcourse.lessons.{LESSONS[name][0]}")
