"""
Title: Cascaded pixel diffusion, DeepFloyd IF style: a 32 px base stage and a x2 super-resolution stage
Description: DeepFloyd IF draws in pixel space in a cascade: a text-conditioned base model at 64 px,
then diffusion models that upsample, each conditioned on the image below it (upsampled, and noised
on purpose) and on the same frozen text encoder. Here, at a size a CPU trains: a base stage at 32 px
and a super-resolution stage to 64 px, on captioned digits. FID at each stage on the judge's
features, text alignment, and two ablations: the cascade against one 64 px model given the same
training compute, and the super-resolution stage trained with and without noise augmentation.

    tfcourse run cascaded-diffusion    # TFDS mnist + BSDS500 photos from a local folder
    tfcourse run cascaded-diffusion --smoke    # synthetic glyphs and textures, tiny models: minutes on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run cascaded-diffusion --config configs/cascaded-diffusion-assets.yaml

The data, the text encoder and the training are text-to-image's (tfcourse.lessons.text_to_image):
- the captioned digits are drawn at 64 px; the base stage trains on them shrunk to 32 px (area
  averaging), as IF's base trains on downscaled images;
- one text encoder, pre-trained on the captions and frozen, serves every stage (IF: T5-XXL);
- every stage predicts v with the digit's pixels weighted up, and samples with its EMA weights;
- unlike IF, the super-resolution stage draws the residual over its input's bilinear upsampling (as
  SRDiff does), not the whole image: at the steps a CPU affords, a whole-image stage stayed far
  behind plain bilinear upsampling (`diffusion.RESIDUAL_SCALE` says by how much).

Compute: each UNet has the same widths and runs at 16 x 16 (the base on 2 x 2 patches of 32 px, the
64 px ones on 4 x 4 patches), so a training step costs about the same in every stage; the
single-stage model trains for the base's and the super-resolution stage's steps together.

FID compares Inception features in the literature; here the features are the 128 of the "features"
layer of the judge trained on real images at that resolution (one judge per resolution), since an
ImageNet network sees mostly the photo behind a 32 px digit.
"""

import dataclasses
import os
import textwrap
import typing

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, metrics, runs, train, viz
from tfcourse.data import captioned_digits as captions
from tfcourse.lessons import text_to_image
from tfcourse.models import diffusion

STAGES = ("base", "super_resolution", "super_resolution_no_augmentation", "single_stage")
GUIDANCE_SWEEP = (1.0, 3.0, 7.5, 12.0, 20.0)

# ## Configuration


@dataclasses.dataclass
class ModelConfig:
    size: typing.Literal[tuple(diffusion.SMALL_SIZES)] = "small"  # every stage's UNet and the text encoder
    low_res_size: int = 32  # the base stage; the cascade ends at 2 x this

    def validate(self):
        if self.low_res_size % captions.IMAGE_SIZE:
            raise UserError(f"model.low_res_size = {self.low_res_size}: a multiple of {captions.IMAGE_SIZE}, please.")


@dataclasses.dataclass
class TrainConfig(text_to_image.TrainConfig):
    # `epochs` are the base stage's; the single-stage model trains for epochs + super_resolution_epochs
    super_resolution_epochs: int = 8
    highest_augmentation_level: int = 500  # training noises the low-res image to a step in 0..this (of 1000)

    def validate(self):
        super().validate()
        if self.super_resolution_epochs < 1 or not 0 <= self.highest_augmentation_level < diffusion.NUM_TRAIN_STEPS:
            raise UserError("train.super_resolution_epochs >= 1 and train.highest_augmentation_level in 0..999, please.")


@dataclasses.dataclass
class SampleConfig:
    num_steps: int = 50  # the base and the single-stage model
    super_resolution_steps: int = 25
    scheduler: typing.Literal[tuple(diffusion.SCHEDULERS)] = "ddim"
    guidance: float = 12.0  # the base and the single-stage model (text-to-image's default)
    super_resolution_guidance: float = 3.0
    augmentation_level: int = 100  # the step the base's output is noised to before it conditions the next stage
    samples: int = 500  # test captions drawn by every model, for FID and text alignment
    sweep_samples: int = 100  # test captions per guidance scale

    def validate(self):
        if min(self.num_steps, self.super_resolution_steps, self.sweep_samples) < 1 or self.samples < 2:
            raise UserError("sample.num_steps, super_resolution_steps and sweep_samples >= 1, samples >= 2, please.")
        if min(self.guidance, self.super_resolution_guidance) < 0:
            raise UserError("sample.guidance and super_resolution_guidance must be >= 0.")
        if not 0 <= self.augmentation_level < diffusion.NUM_TRAIN_STEPS:
            raise UserError(f"sample.augmentation_level = {self.augmentation_level}: a step in 0..999, please.")


@dataclasses.dataclass
class Config:
    data: text_to_image.DataConfig = dataclasses.field(default_factory=text_to_image.DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)


SMOKE = {
    "data": {"digits": "synthetic", "backgrounds": "synthetic", "max_digits": 300, "held_out_combinations": 2},
    "model": {"size": "tiny"},
    "train": {"epochs": 1, "super_resolution_epochs": 1, "steps_per_epoch": 8, "classifier_epochs": 1,
              "text_encoder_epochs": 3, "ema_momentum": 0.5},
    "sample": {"num_steps": 6, "super_resolution_steps": 4, "samples": 16, "sweep_samples": 8},
}

# ## The stages


def build_stages(size, low_res_size, vocabulary_size):
    """-> (the text encoder, {stage: denoiser}): one text encoder under every stage's UNet, all UNets
    of `size`'s widths at 16 x 16 (the 2 x low_res_size ones on bigger patches)."""
    low = dataclasses.replace(diffusion.small_config(size), image_size=low_res_size, patch_size=low_res_size // 16)
    high = dataclasses.replace(low, image_size=2 * low_res_size, patch_size=low_res_size // 8)
    text_encoder = diffusion.small_text_encoder(vocabulary_size, captions.SEQUENCE_LENGTH, low)
    unets = {"base": diffusion.small_unet(low, captions.SEQUENCE_LENGTH),
             "super_resolution": diffusion.small_unet(high, captions.SEQUENCE_LENGTH, low_res=True),
             "super_resolution_no_augmentation": diffusion.small_unet(high, captions.SEQUENCE_LENGTH, low_res=True),
             "single_stage": diffusion.small_unet(high, captions.SEQUENCE_LENGTH)}
    return text_encoder, {stage: diffusion.denoiser_model(unet, text_encoder) for stage, unet in unets.items()}


def super_resolve(sampler, prompts, low_res, level, seed, s):
    """A super-resolution stage's images from `low_res` (uint8): it sees them noised to step `level`,
    and draws what to add to their clean bilinear upsampling."""
    condition = diffusion.noise_augmented(low_res, sampler.x_shape[0], tf.fill([len(low_res)], level),
                                          sampler.alphas_cumprod, sampler.time_width, seed=[seed, 99])
    return sampler.generate(prompts, seed, s.super_resolution_steps, s.super_resolution_guidance, scheduler=s.scheduler,
                            condition=[condition["low_res"], condition["augmentation_embedding"]], low_res=low_res)


def cascade(base, super_resolution, prompts, seed, s, guidance=None):
    """Text -> the base stage's images -> the super-resolution stage's, end to end. -> (both)."""
    low_res = base.generate(prompts, seed, s.num_steps, s.guidance if guidance is None else guidance, scheduler=s.scheduler)
    return low_res, super_resolve(super_resolution, prompts, low_res, s.augmentation_level, seed + 1, s)


# ## Measuring


def feature_extractor(judge):
    """The judge's 128 penultimate features: FID's feature space at its resolution."""
    return keras.Model(judge.input, judge.get_layer("features").output, name=f"{judge.name}_features")


def evaluate(images, attributes, judge, features, real_features):
    """Text alignment (the judge's agreement with the caption) and FID against the real test images."""
    return {**text_to_image.judge(judge, images, attributes), "image_size": images.shape[1],
            "fid": metrics.frechet_inception_distance(real_features, features.predict(images, batch_size=256, verbose=0))}


# ## The lesson

STAGE_FILES = {stage: f"{stage}.keras" for stage in STAGES}


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    strategy = train.get_strategy(config.train.strategy)
    data, m, t, s = config.data, config.model, config.train, config.sample
    low_size, high_size = m.low_res_size, 2 * m.low_res_size

    with timings("data"):
        high, held_out, data_summary = text_to_image.load_splits(data, text_to_image.load_sources(data), high_size)
        low = {name: split.downsampled(low_size) for name, split in high.items()}
        by_size = {low_size: low, high_size: high}
        tokenize = captions.tokenizer()
        batch_size = train.global_batch_size(data.batch_size, strategy)
    num_digits = int(max(split.attributes[:, 0].max() for split in high.values())) + 1
    print(f"Data: split sizes {data_summary['split_sizes']} at {high_size} px (and {low_size} px for the base stage).")

    # 1. A judge per resolution: text alignment, and the features FID compares.
    judges, histories = {}, {}
    with timings("train_judges"):
        for size, splits in by_size.items():
            judges[size], histories[f"judge_{size}px"] = text_to_image.train_judge(
                splits, num_digits, t, data.seed, os.path.join(checkpoints, f"judge_{size}px"), strategy)
    real = {size: text_to_image.judge(judges[size], splits["test"].images, splits["test"].attributes)
            for size, splits in by_size.items()}
    print(f"Judges on real test images: {real}")

    # 2. One frozen text encoder, then each stage trained on its own: the base on 32 px images, the
    # super-resolution stage with and without noise augmentation, the single stage for both budgets.
    alphas = diffusion.cosine_alphas_cumprod()
    plans = {"base": (low, None, t.epochs),
             "super_resolution": (high, (low_size, t.highest_augmentation_level), t.super_resolution_epochs),
             "super_resolution_no_augmentation": (high, (low_size, 0), t.super_resolution_epochs),
             "single_stage": (high, None, t.epochs + t.super_resolution_epochs)}
    with train.model_scope(strategy):
        text_encoder, denoisers = build_stages(m.size, low_size, len(tokenize.get_vocabulary()))
        with timings("train_text_encoder"):
            histories["text_encoder"] = text_to_image.pretrain_text_encoder(
                text_encoder, tokenize, t.text_encoder_epochs, os.path.join(checkpoints, "text_encoder"), strategy)
        time_width = denoisers["base"].input["timestep_embedding"].shape[-1]
        for stage, (splits, super_resolution, epochs) in plans.items():
            pipelines = {name: text_to_image.noising_pipeline(splits[name], data, tokenize, alphas, time_width, batch_size,
                                                              name == "train", t.digit_loss_weight, super_resolution)
                         for name in ("train", "validation")}
            with timings(f"train_{stage}"):
                histories[stage] = text_to_image.train_denoiser(denoisers[stage], pipelines, t, epochs,
                                                                os.path.join(checkpoints, stage), strategy)
            train.write_atomically(os.path.join(run_dir, STAGE_FILES[stage]), denoisers[stage].save)
    samplers = {stage: diffusion.pixel_sampler(d.get_layer("unet"), text_encoder, tokenize, alphas)
                for stage, d in denoisers.items()}

    # 3. Every model draws the same test captions; the judges check them, and FID compares them with
    # the real test images at their resolution.
    features = {size: feature_extractor(judges[size]) for size in by_size}
    real_features = {size: features[size].predict(splits["test"].images, batch_size=256, verbose=0)
                     for size, splits in by_size.items()}

    def measured(images, attributes):
        size = images.shape[1]
        return evaluate(images, attributes, judges[size], features[size], real_features[size])

    test = high["test"].attributes
    asked = test[np.random.default_rng(data.seed).permutation(len(test))[: s.samples]]
    prompts = [captions.caption(*a) for a in asked]
    with timings("sample"):
        base_images, cascade_images = cascade(samplers["base"], samplers["super_resolution"], prompts, 1, s)
        drawn = {
            f"base ({low_size} px)": base_images,
            f"base, bilinear to {high_size} px": np.round(tf.image.resize(base_images, (high_size, high_size))).astype(np.uint8),
            "cascade": cascade_images,
            "cascade, super-resolution trained without noise augmentation": super_resolve(
                samplers["super_resolution_no_augmentation"], prompts, base_images, 0, 2, s),
            "single stage": samplers["single_stage"].generate(prompts, 1, s.num_steps, s.guidance, scheduler=s.scheduler),
        }
        results = {name: measured(images, asked) for name, images in drawn.items()}
        # What the super-resolution stages do given a perfect base: the real test images at low res.
        real_low, real_asked = low["test"].images[: s.samples], test[: s.samples]
        for stage, level, label in (("super_resolution", s.augmentation_level, "super-resolution"),
                                    ("super_resolution_no_augmentation", 0, "super-resolution trained without noise augmentation")):
            name = f"{label}, on real {low_size} px test images"
            drawn[name] = super_resolve(samplers[stage], [captions.caption(*a) for a in real_asked], real_low, level, 3, s)
            results[name] = measured(drawn[name], real_asked)
        reference = {f"real validation images ({size} px)": measured(splits["validation"].images[: s.samples],
                                                                     splits["validation"].attributes[: s.samples])
                     for size, splits in by_size.items()}

    with timings("guidance_sweep"):
        sweep = []
        for guidance in GUIDANCE_SWEEP:
            part = slice(0, s.sweep_samples)
            low_res, final = cascade(samplers["base"], samplers["super_resolution"], prompts[part], 4, s, guidance)
            sweep.append({"guidance": guidance, "base": measured(low_res, asked[part]),
                          "cascade": measured(final, asked[part])})

    report = {
        "lesson": "cascaded-diffusion",
        "config": dataclasses.asdict(config),
        "data": data_summary,
        "note": text_to_image.honesty_note(data_summary, config),
        "distribution": train.describe_strategy(strategy, data.batch_size),
        "model": {"stages": {stage: {"unet_parameters": d.get_layer("unet").count_params(),
                                     "training_steps": plans[stage][2] * t.steps_per_epoch,
                                     "ema_momentum": text_to_image.ema_momentum(t.ema_momentum, plans[stage][2] * t.steps_per_epoch)}
                              for stage, d in denoisers.items()},
                  "text_encoder_parameters": text_encoder.count_params(),
                  "sampler": f"{s.scheduler.upper()}, {s.num_steps} steps at guidance {s.guidance} (base, single stage), "
                             f"{s.super_resolution_steps} at {s.super_resolution_guidance} (super-resolution), "
                             f"low-res input noised to step {s.augmentation_level}",
                  "fid_features": "the 128 'features' of the judge trained on real images at that resolution"},
        "judges_on_real_test_images": {f"{size}px": r for size, r in real.items()},
        "results": results,
        "reference": reference,
        "guidance_sweep": sweep,
        "timings_seconds": dict(timings),
    }
    real_rows = {f"real, {low_size} px (the input)": real_low[:8], f"real, {high_size} px": high["test"].images[:8]}
    _plots(run_dir, drawn, prompts, histories, report, real_rows)
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def _plots(run_dir, drawn, prompts, histories, report, real_rows):
    shown = {textwrap.fill(name, 24): images[:8] for name, images in drawn.items() if "on real" not in name}
    viz.plot_image_rows(shown, prompts[:8], os.path.join(run_dir, "samples.png"),
                        "The same test captions through each model (base row at its own resolution)")
    real_rows = {**real_rows, **{textwrap.fill(name, 24): images[:8] for name, images in drawn.items() if "on real" in name}}
    viz.plot_image_rows(real_rows, [], os.path.join(run_dir, "super_resolution_on_real.png"),
                        "The super-resolution stages on real low-res test images")
    viz.plot_training_curves({stage: (1, histories[stage]) for stage in STAGES}, os.path.join(run_dir, "training_curves.png"),
                             "cascaded diffusion: the stages' losses", metrics=("loss",))
    _plot_fid_and_guidance(report, os.path.join(run_dir, "fid_and_guidance.png"))


def _plot_fid_and_guidance(report, path):
    import matplotlib.pyplot as plt

    figure, (bars, alignment, fid) = plt.subplots(1, 3, figsize=(16, 4.5))
    every = {**report["results"], **report["reference"]}
    largest = max(r["image_size"] for r in every.values())
    final = {name: r for name, r in every.items() if r["image_size"] == largest}
    names = list(final)
    bars.barh(range(len(names)), [final[n]["fid"] for n in names], color="tab:blue")
    bars.set_yticks(range(len(names)), [n.replace(", ", ",\n") for n in names], fontsize=7)
    bars.invert_yaxis()
    bars.set_xlabel("FID at the final resolution (lower is better)")
    bars.set_title("Final-resolution images")
    sweep = report["guidance_sweep"]
    scales = [r["guidance"] for r in sweep]
    for stage, marker in (("base", "o-"), ("cascade", "s-")):
        alignment.plot(scales, [r[stage]["all_three"] for r in sweep], marker, label=stage)
        fid.plot(scales, [r[stage]["fid"] for r in sweep], marker, label=stage)
    alignment.set_ylim(-0.02, 1.02)
    alignment.set_ylabel("judged as captioned (digit, colour and side)")
    fid.set_ylabel(f"FID ({sweep[0]['base']['count']} samples)")
    for ax in (alignment, fid):
        ax.set_xlabel("base stage's classifier-free guidance scale")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    alignment.set_title("Text alignment by guidance")
    fid.set_title("FID by guidance")
    viz.save_figure(figure, path)


def summary_markdown(report):
    lines = ["# cascaded-diffusion run", "", f"Data: {report['data']['split_sizes']} captioned images.", ""]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| images | count | FID | digit | colour | side | all three |", "|---|---|---|---|---|---|---|"]
    for name, r in {**report["results"], **report["reference"]}.items():
        lines.append(f"| {name} | {r['count']} | {r['fid']:.2f} | {r['digit']:.3f} | {r['colour']:.3f} | "
                     f"{r['position']:.3f} | {r['all_three']:.3f} |")
    lines += ["", "By the base stage's guidance scale (all three right / FID):", "",
              "| guidance | base | cascade |", "|---|---|---|"]
    lines += [f"| {r['guidance']} | {r['base']['all_three']:.3f} / {r['base']['fid']:.2f} | "
              f"{r['cascade']['all_three']:.3f} / {r['cascade']['fid']:.2f} |" for r in report["guidance_sweep"]]
    lines += ["", "| stage | UNet parameters | training steps | EMA momentum |", "|---|---|---|---|"]
    lines += [f"| {stage} | {m['unet_parameters']:,} | {m['training_steps']} | {m['ema_momentum']:.5g} |"
              for stage, m in report["model"]["stages"].items()]
    lines += ["", f"Sampler: {report['model']['sampler']}. FID features: {report['model']['fid_features']}.", "",
              "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
