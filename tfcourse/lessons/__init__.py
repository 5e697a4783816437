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
    "pose": (
        "pose",
        "Pose classification: a Keras classifier on normalised MoveNet keypoints; PCK against the publisher's keypoints.",
    ),
    "localization": (
        "localization",
        "Single-object localisation: a pretrained backbone with a class head and a box head, trained on IoU + class loss.",
    ),
    "small-images": (
        "small_images",
        "Transfer to 28-32 px images: upsampled ImageNet backbone vs the backbone at native size vs a small CNN.",
    ),
    "interpret": (
        "interpret",
        "Saliency, SmoothGrad, Grad-CAM and activation grids for any image run, checked on a known answer.",
    ),
    "dann": (
        "dann",
        "Domain-adversarial training (gradient reversal) from MNIST to a self-built MNIST-M vs source-only and target-trained.",
    ),
    "video-movinet": (
        "video_movinet",
        "Video classification: a causal MoViNet-A0 frozen, then fine-tuned; a stream TFLite model checked frame by frame.",
    ),
    "segment-anything": (
        "segment_anything",
        "Prompted segmentation: SAM prompted, its mask decoder fine-tuned, a small SAM from scratch, vs a U-Net.",
    ),
    "text-to-image": (
        "text_to_image",
        "A small Stable-Diffusion-style model trained on captioned digits; alignment checked by a classifier; img2img, inpainting.",
    ),
    "dreambooth": (
        "dreambooth",
        "DreamBooth on the text-to-image model: one subject behind a rare token, with vs without prior preservation.",
    ),
    "cascaded-diffusion": (
        "cascaded_diffusion",
        "DeepFloyd IF in miniature: a 32 px base and a x2 super-resolution diffusion stage; FID vs one stage, noise augmentation.",
    ),
    "agent": (
        "agent",
        "A tool-using agent: a KerasHub Gemma calls the course's exported models as tools; a tiny one fine-tuned here.",
    ),
    "crop-disease": (
        "crop_disease",
        "Leaf disease classification: pretrained backbone frozen, then fine-tuned, vs scratch; TFLite export.",
    ),
}


def load_lesson(name):
    return importlib.import_module(f"tfcourse.lessons.{LESSONS[name][0]}")
