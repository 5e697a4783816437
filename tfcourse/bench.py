"""`tfcourse bench`: where the crop-disease lesson's time goes, measured in one run.

    tfcourse bench --smoke                      # synthetic images, a tiny random MobileNetV2: about a minute
    TFCOURSE_ASSETS=../shared/assets tfcourse bench --config configs/crop-disease-assets.yaml

It takes the crop-disease lesson's config (and its `--config` / `--set` overrides, plus a
`bench` section), builds the lesson's model and its real tf.data pipeline, and measures:

1. input pipeline: a training step fed by the pipeline (decode, cache, shuffle, augment, batch,
   prefetch) vs by the same batches already in memory; goal: a ratio of 1.05 or less;
2. embedding cache: a frozen-backbone epoch on cached backbone features vs recomputing them;
3. inference: single-example latency and batch throughput of TFLite float32 and int8 vs Keras
   `predict`, a direct call and a tf.function;
4. compute: the training step's FLOPs (TF's graph profiler) per second against this machine's
   measured float32 matmul rate;
5. scaling: step time against batch size and image size.

Every figure is measured in the run; `bench.json` holds them all and `bench.md` the table.
The training step is our own tf.function (forward, loss, gradients, Adam: what Keras' `fit`
runs per batch, without metrics) because one compiled function must serve both data sources
and its graph must be at hand to count FLOPs.
"""

import contextlib
import dataclasses
import json
import math
import os
import platform
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, export, runs, train
from tfcourse.data import images
from tfcourse.lessons import crop_disease

PIPELINE_GOAL = 1.05  # pipeline-fed step time / in-memory step time


@dataclasses.dataclass
class BenchConfig:
    rounds: int = 6  # interleaved epochs per data source (input pipeline, embedding cache)
    cached_rounds: int = 10  # epochs on the cached features (each takes milliseconds)
    compute_steps: int = 10  # timed steps at the config's batch and image size
    latency_calls: int = 50  # single-example calls per inference variant
    throughput_batch_size: int = 32
    throughput_calls: int = 5
    matmul_size: int = 2048
    matmul_repeats: int = 5
    scaling_batch_sizes: list = dataclasses.field(default_factory=lambda: [8, 16, 32, 64])
    scaling_image_sizes: list = dataclasses.field(default_factory=lambda: [96, 128, 160, 224])
    scaling_steps: int = 5

    def validate(self):
        for name in ("rounds", "cached_rounds", "compute_steps", "latency_calls", "throughput_batch_size",
                     "throughput_calls", "matmul_size", "matmul_repeats", "scaling_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"bench.{name} = {getattr(self, name)} must be at least 1.")
        for name in ("scaling_batch_sizes", "scaling_image_sizes"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                raise UserError(f"bench.{name} = {values!r} must be a non-empty list of positive integers.")
        if min(self.scaling_image_sizes) < 32:
            raise UserError(f"bench.scaling_image_sizes = {self.scaling_image_sizes}: use sizes of at least 32.")


@dataclasses.dataclass
class Config(crop_disease.Config):
    bench: BenchConfig = dataclasses.field(default_factory=BenchConfig)


SMOKE = {
    **crop_disease.SMOKE,
    "bench": {"rounds": 2, "cached_rounds": 3, "compute_steps": 2, "latency_calls": 10, "throughput_batch_size": 8,
              "throughput_calls": 2, "matmul_size": 512, "matmul_repeats": 3, "scaling_batch_sizes": [4, 8, 16],
              "scaling_image_sizes": [32, 48, 64], "scaling_steps": 2},
}


# ## The training step


def make_train_step(model, learning_rate):
    """A plain function (images, labels) -> loss that trains `model`'s trainable variables with Adam.

    Wrap it in tf.function to run it; its graph is what the FLOP count reads.
    """
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    variables = model.trainable_variables
    tf_variables = [v.value for v in variables]  # the tf.Variables behind Keras' variables
    optimizer.build(variables)

    def step(images, labels):
        # Watch only what trains: TF would otherwise also build (never run) gradients of the
        # frozen backbone, and the FLOP count would include them.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(tf_variables)
            loss = loss_fn(labels, model(images, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, tf_variables), variables))
        return loss

    return step


def frozen_classifier(config, num_classes, image_size=None):
    """The lesson's classifier with its backbone frozen (its stage 1), at `image_size` if given."""
    if image_size is not None and image_size != config.data.image_size:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=image_size))
    model, backbone = crop_disease.make_classifier(config, num_classes, config.model.source)
    backbone.features.trainable = False
    return model, backbone


def graph_flops(concrete_function):
    """(total, {op type: FLOPs}) of a concrete function's graph, as TF's profiler counts them.

    The profiler counts only ops with fully known shapes (trace with a fixed batch size) and only
    op types that have a FLOP rule.
    """
    options = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    profile = tf.compat.v1.profiler.profile(graph=concrete_function.graph, cmd="op", options=options)
    by_op, nodes = {}, list(profile.children)  # the "op" view nests each op type under the previous one
    while nodes:
        node = nodes.pop()
        by_op[node.name] = int(node.float_ops)
        nodes += node.children
    return int(profile.total_float_ops), by_op


def uncounted_heavy_ops(concrete_function, counted):
    """Convolution and matmul op types in the graph that the profiler has no FLOP rule for."""
    types = {op.type for op in concrete_function.graph.get_operations()}
    return sorted(t for t in types - set(counted) if "Conv" in t or "MatMul" in t)


def _time_epoch(step, batches):
    """Seconds for one pass of `step` over `batches` (a dataset or a list), the number of steps, and
    the seconds of it spent deleting the epoch's iterator (part of an epoch's cost: `fit` makes a
    new iterator each epoch too)."""
    start, steps, loss = time.perf_counter(), 0, None
    iterator = iter(batches)
    for x, y in iterator:
        loss = step(x, y)
        steps += 1
    float(loss)  # waits for the last step
    teardown = time.perf_counter()
    del iterator
    end = time.perf_counter()
    return end - start, steps, end - teardown


def _time_reading(batches):
    """Seconds to read one epoch of a dataset without training, its number of batches, and the
    seconds until its first batch."""
    start, steps, first = time.perf_counter(), 0, None
    for _ in batches:
        first = time.perf_counter() - start if first is None else first
        steps += 1
    return time.perf_counter() - start, steps, first


def _time_calls(function, calls):
    """Seconds of each of `calls` calls to `function()`, after two warm-up calls."""
    for _ in range(2):
        function()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


@contextlib.contextmanager
def _section(timings, name):
    with timings(name):
        yield
    print(f"bench: {name} took {timings[name]} s", flush=True)


def _median(values):
    return float(np.median(values))


# ## The bench


def run(config, out_dir):
    timings = runs.Timings()
    began = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(config.data.seed)
    train.set_mixed_precision(config.train.mixed_precision)
    data, settings = config.data, config.bench
    with tempfile.TemporaryDirectory(prefix="tfcourse-bench-") as work_dir:
        with _section(timings, "data_and_model"):
            splits, sizes, class_names, data_summary = crop_disease.load_splits(data, work_dir)

            def pipeline(split, training, augment, name):
                return images.image_dataset(
                    splits[split], data.batch_size, training=training, seed=data.seed, augment=augment,
                    cache_file=images.cache_file(sizes[split], data.image_size, work_dir, name),
                )

            train_pipeline = pipeline("train", True, data.augment, "train")
            plain_pipeline = pipeline("train", True, False, "train_plain")  # shuffled, not augmented
            model, backbone = frozen_classifier(config, len(class_names))
            step = tf.function(make_train_step(model, config.train.feature_learning_rate))
        report = {
            "machine": machine_info(),
            "model": {
                "backbone": config.model.backbone, "source": backbone.source, "pretrained": backbone.pretrained,
                "image_size": data.image_size, "batch_size": data.batch_size, "num_classes": len(class_names),
                "parameters": int(model.count_params()),
                "trainable_parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
                "training_step": "frozen backbone (the lesson's stage 1): forward, loss, head gradients, Adam",
            },
            "data": {k: data_summary[k] for k in ("source", "num_skipped", "skipped") if k in data_summary}
                    | {"synthetic": bool(data_summary.get("synthetic")), "split_sizes": sizes},
            "note": crop_disease._honesty_note(backbone, data_summary),
            "config": dataclasses.asdict(config),
        }
        print(f"bench: {config.model.backbone} from {backbone.source} (pretrained: {backbone.pretrained}), "
              f"{data.image_size} px, batch {data.batch_size}, {sizes['train']} training images.")
        if report["note"]:
            print(f"bench: note: {report['note']}")

        with _section(timings, "input_pipeline"):
            report["input_pipeline"], in_memory = input_pipeline(step, train_pipeline, plain_pipeline, settings.rounds)
        with _section(timings, "embedding_cache"):
            report["embedding_cache"] = embedding_cache(model, config, plain_pipeline, report["input_pipeline"],
                                                        settings.cached_rounds)
        with _section(timings, "inference"):
            report["inference"] = inference(model, splits, data, config.export.representative_images, work_dir, settings)
        with _section(timings, "compute"):
            report["compute"] = compute(model, backbone, step, in_memory, config, settings)
        with _section(timings, "scaling"):
            report["scaling"] = scaling(config, len(class_names), model, step, settings)
    timings["total"] = round(time.perf_counter() - began, 2)
    report["timings_seconds"] = dict(timings)
    table = bench_markdown(report)
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write(table)
    print(table)
    return report


def machine_info():
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [f"{d.device_type}:{d.name}" for d in tf.config.list_logical_devices()],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: TF picks
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


# ### 1. Input pipeline


def input_pipeline(step, train_pipeline, plain_pipeline, rounds):
    """Per-step time fed by the augmented pipeline, the unaugmented one, and batches in memory;
    and, as a diagnosis, by the augmented pipeline with tf.data's autotuning off (deleting an
    autotuned iterator can wait about a second for tf.data's autotuning thread).

    A warm-up epoch of each source traces the step (every batch shape) and fills the caches; then
    the sources take turns, one epoch each per round, so load from other work hits all of them.
    Each round also reads one epoch of the pipeline alone, without training: what it costs when
    nothing competes with it for the CPU, and how long an epoch's first batch takes.
    """
    in_memory = [(tf.constant(x), tf.constant(y)) for x, y in train_pipeline.as_numpy_iterator()]
    options = tf.data.Options()
    options.autotune.enabled = False
    sources = {"pipeline": train_pipeline, "pipeline_unaugmented": plain_pipeline,
               "pipeline_autotune_off": train_pipeline.with_options(options), "in_memory": in_memory}
    start = time.perf_counter()
    for batches in sources.values():
        _time_epoch(step, batches)
    warm_up = time.perf_counter() - start
    per_step = {name: [] for name in sources}
    epoch_seconds = {name: [] for name in sources}
    teardown = {name: [] for name in sources}
    pipeline_step_without_teardown = []
    alone, alone_unaugmented, first_batch = [], [], []
    for _ in range(rounds):
        for name, batches in sources.items():
            seconds, steps, teardown_seconds = _time_epoch(step, batches)
            per_step[name].append(seconds / steps)
            epoch_seconds[name].append(seconds)
            teardown[name].append(teardown_seconds)
            if name == "pipeline":
                pipeline_step_without_teardown.append((seconds - teardown_seconds) / steps)
        seconds, steps, first = _time_reading(train_pipeline)
        alone.append(seconds / steps)
        first_batch.append(first)
        seconds, steps, _ = _time_reading(plain_pipeline)
        alone_unaugmented.append(seconds / steps)
    result = {
        "steps_per_epoch": len(in_memory),
        "examples_per_epoch": int(sum(len(y) for _, y in in_memory)),
        "rounds": rounds,
        "warm_up_seconds": warm_up,
        "pipeline_step_seconds": _median(per_step["pipeline"]),
        "pipeline_unaugmented_step_seconds": _median(per_step["pipeline_unaugmented"]),
        "in_memory_step_seconds": _median(per_step["in_memory"]),
        "pipeline_autotune_off_step_seconds": _median(per_step["pipeline_autotune_off"]),
        "pipeline_step_seconds_without_teardown": _median(pipeline_step_without_teardown),
        "epoch_seconds": {name: _median(values) for name, values in epoch_seconds.items()},
        "all_step_seconds": per_step,
        "iterator_teardown_seconds": {name: _median(values) for name, values in teardown.items()},
        "all_iterator_teardown_seconds": teardown,
        "pipeline_alone_batch_seconds": _median(alone),
        "pipeline_alone_unaugmented_batch_seconds": _median(alone_unaugmented),
        "pipeline_alone_first_batch_seconds": _median(first_batch),
    }
    result["ratio"] = result["pipeline_step_seconds"] / result["in_memory_step_seconds"]
    result["ratio_unaugmented"] = result["pipeline_unaugmented_step_seconds"] / result["in_memory_step_seconds"]
    result["ratio_autotune_off"] = result["pipeline_autotune_off_step_seconds"] / result["in_memory_step_seconds"]
    result["ratio_without_teardown"] = (result["pipeline_step_seconds_without_teardown"]
                                        / result["in_memory_step_seconds"])
    result["goal"] = PIPELINE_GOAL
    result["met_goal"] = bool(result["ratio"] <= PIPELINE_GOAL)
    return result, in_memory


# ### 2. Embedding cache


def embedding_cache(model, config, plain_pipeline, pipeline_result, rounds):
    """A frozen-backbone epoch on cached backbone features vs recomputing the backbone every epoch.

    Both sides see the unaugmented training images (cached features cannot be augmented); the
    recomputing epoch is section 1's unaugmented-pipeline epoch, the same frozen-backbone step.
    """
    feature_model = keras.Model(model.inputs, model.get_layer("head_dropout").input)
    features_of = tf.function(lambda x: feature_model(x, training=False), autograph=False,
                              input_signature=[tf.TensorSpec([None, *model.input.shape[1:]], tf.uint8)])
    def build_cache():
        start, features, labels = time.perf_counter(), [], []
        for x, y in plain_pipeline:
            features.append(features_of(x).numpy())
            labels.append(y.numpy())
        return np.concatenate(features), np.concatenate(labels), time.perf_counter() - start

    # The first pass also traces the function and sets up kernels for each batch shape; the
    # break-even uses the second, like the recomputing epoch it is compared with (also warm).
    first_pass_seconds = build_cache()[2]
    features, labels, build_seconds = build_cache()

    inputs = keras.Input(features.shape[1:], name="features")
    head = keras.Model(inputs, model.get_layer("probabilities")(model.get_layer("head_dropout")(inputs)))
    head_step = tf.function(make_train_step(head, config.train.feature_learning_rate))
    cached = (tf.data.Dataset.from_tensor_slices((features, labels))
              .shuffle(len(labels), seed=config.data.seed).batch(config.data.batch_size).prefetch(tf.data.AUTOTUNE))
    _time_epoch(head_step, cached)  # warm-up: traces the head step
    cached_epoch = _median([_time_epoch(head_step, cached)[0] for _ in range(rounds)])
    recompute_epoch = pipeline_result["epoch_seconds"]["pipeline_unaugmented"]
    saving = recompute_epoch - cached_epoch
    return {
        "feature_shape": list(features.shape),
        "cache_build_seconds": build_seconds,
        "cache_build_first_pass_seconds": first_pass_seconds,
        "cached_epoch_seconds": cached_epoch,
        "recomputing_epoch_seconds": recompute_epoch,
        "speedup": recompute_epoch / cached_epoch,
        "break_even_epochs": build_seconds / saving if saving > 0 else None,
        "break_even_epochs_whole": math.ceil(build_seconds / saving) if saving > 0 else None,
        "note": "both sides unaugmented; the recomputing epoch is input_pipeline's pipeline_unaugmented epoch",
    }


# ### 3. Inference


def inference(model, splits, data, representative_count, work_dir, settings):
    """Latency (one image) and throughput (a batch) of TFLite float32 and int8 vs Keras."""
    test_images, _ = images.load_array(splits["test"].batch(64))
    train_images, _ = images.load_array(splits["train"].take(representative_count).batch(64))
    saved_model_dir = os.path.join(work_dir, "saved_model")
    start = time.perf_counter()
    model.export(saved_model_dir, format="tf_saved_model", verbose=False)
    tflite = {}
    for variant in ("float32", "int8"):
        path = os.path.join(work_dir, f"model_{variant}.tflite")
        with open(path, "wb") as f:
            f.write(export.convert_tflite(saved_model_dir, variant, train_images))
        tflite[variant] = export.TFLiteModel(path)
    conversion_seconds = time.perf_counter() - start

    reference = model.predict_on_batch(test_images)
    parity = {f"tflite_{variant}_max_abs_diff": float(np.abs(export.predict_batches(m, test_images) - reference).max())
              for variant, m in tflite.items()}
    call = tf.function(lambda x: model(x, training=False), autograph=False)
    variants = {
        "tflite_float32": tflite["float32"],
        "tflite_int8": tflite["int8"],
        "keras_predict": lambda x: model.predict(x, batch_size=len(x), verbose=0),
        "keras_call": lambda x: model(x, training=False).numpy(),
        "tf_function": lambda x: call(x).numpy(),
    }
    single = test_images[:1]
    batch = np.resize(test_images, (settings.throughput_batch_size, *test_images.shape[1:]))  # test images, repeated
    results = {}
    for name, predict in variants.items():
        seconds = _time_calls(lambda: predict(single), settings.latency_calls)
        batch_seconds = _time_calls(lambda: predict(batch), settings.throughput_calls)
        results[name] = {
            "latency_ms_median": 1000 * _median(seconds),
            "latency_ms_p90": 1000 * float(np.percentile(seconds, 90)),
            "throughput_examples_per_second": len(batch) / _median(batch_seconds),
        }
    return {"variants": results, "latency_calls": settings.latency_calls, "throughput_batch_size": len(batch),
            "throughput_calls": settings.throughput_calls, "conversion_seconds": conversion_seconds,
            "representative_images": len(train_images), "parity_on_test_images": parity,
            "tflite_threads": "LiteRT default"}


# ### 4. Compute


def matmul_gflops(size, repeats):
    """This machine's float32 dense matmul rate: GFLOP/s of a [size, size] @ [size, size] tf.matmul."""
    a = tf.random.stateless_normal([size, size], seed=[1, 2])
    b = tf.random.stateless_normal([size, size], seed=[3, 4])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)), autograph=False)
    seconds = _time_calls(lambda: matmul().numpy(), repeats)
    flops = 2 * size**3
    return {"size": size, "repeats": repeats, "gflops_median": flops / _median(seconds) / 1e9,
            "gflops_best": flops / min(seconds) / 1e9}


def _step_compute(step, x, y, steps):
    concrete = step.get_concrete_function(tf.TensorSpec(x.shape, x.dtype), tf.TensorSpec(y.shape, y.dtype))
    flops, by_op = graph_flops(concrete)
    seconds = _median(_time_calls(lambda: float(step(x, y)), steps))
    return {"step_flops": flops, "step_seconds": seconds, "achieved_gflops": flops / seconds / 1e9,
            "flops_by_op": by_op, "uncounted_op_types": uncounted_heavy_ops(concrete, by_op)}


def compute(model, backbone, step, in_memory, config, settings):
    """Achieved GFLOP/s of full-batch training steps vs the measured matmul rate.

    Two steps: the frozen-backbone one (sections 1 and 5), and one training every layer but batch
    norm (the lesson's fine-tuning taken all the way down). FLOPs: TF's profiler on each step's
    graph; where it has no rule for an op (depthwise convolution gradients) its count is a lower
    bound, so 3 x the forward FLOPs is given beside it.
    """
    x, y = ([b for b in in_memory if len(b[1]) == config.data.batch_size] or in_memory)[0]
    forward = tf.function(lambda images: model(images, training=False), autograph=False)
    forward_flops = graph_flops(forward.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)))[0]
    peak = matmul_gflops(settings.matmul_size, settings.matmul_repeats)
    steps = {"frozen_backbone": _step_compute(step, x, y, settings.compute_steps)}
    backbone.fine_tune_top(len(getattr(backbone.features, "layers", [])))
    all_layers = tf.function(make_train_step(model, config.train.fine_tune_learning_rate))
    steps["all_layers"] = _step_compute(all_layers, x, y, settings.compute_steps)
    steps["all_layers"]["achieved_gflops_forward_x3"] = 3 * forward_flops / steps["all_layers"]["step_seconds"] / 1e9
    for result in steps.values():
        result["percent_of_matmul"] = 100 * result["achieved_gflops"] / peak["gflops_median"]
    return {
        "flop_counter": "tf.compat.v1.profiler float_operation on each train step's graph",
        "batch_size": int(len(y)),
        "forward_flops": forward_flops,
        "steps": steps,
        "matmul": peak,
    }


# ### 5. Scaling


def _step_seconds(step, batch_size, image_size, num_classes, steps, seed):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8))
    y = tf.constant(rng.integers(0, num_classes, batch_size))
    return _median(_time_calls(lambda: float(step(x, y)), steps))


def scaling(config, num_classes, model, step, settings):
    """Seconds per frozen-backbone step against batch size (at the config's image size) and image
    size (at the config's batch size), on random in-memory images: compute only, no pipeline."""
    data, rows = config.data, {"batch_size": [], "image_size": []}
    for batch_size in settings.scaling_batch_sizes:
        seconds = _step_seconds(step, batch_size, data.image_size, num_classes, settings.scaling_steps, data.seed)
        rows["batch_size"].append({"batch_size": batch_size, "image_size": data.image_size, "step_seconds": seconds,
                                   "seconds_per_example": seconds / batch_size})
    for image_size in settings.scaling_image_sizes:
        sized_step = step
        if image_size != data.image_size:
            sized_step = tf.function(make_train_step(frozen_classifier(config, num_classes, image_size)[0],
                                                     config.train.feature_learning_rate))
        seconds = _step_seconds(sized_step, data.batch_size, image_size, num_classes, settings.scaling_steps, data.seed)
        rows["image_size"].append({"batch_size": data.batch_size, "image_size": image_size, "step_seconds": seconds,
                                   "seconds_per_example": seconds / data.batch_size})
    return {**rows, "steps": settings.scaling_steps, "data": "random uint8 images in memory"}


# ## The table


def bench_markdown(report):
    m, p, c, i, k = (report[s] for s in ("model", "input_pipeline", "embedding_cache", "inference", "compute"))
    machine = report["machine"]
    lines = [
        "# tfcourse bench: crop-disease",
        "",
        f"Model: {m['backbone']} from {m['source']} (pretrained: {m['pretrained']}), {m['image_size']} px, "
        f"batch {m['batch_size']}, {m['num_classes']} classes; training step: {m['training_step']}.",
        f"Machine: {machine['cpu_count']} CPUs, TensorFlow {machine['tensorflow']}, devices {', '.join(machine['devices'])}.",
        "",
    ]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    verdict = "met" if p["met_goal"] else "NOT met"
    lines += [
        "| section | measured | figure |",
        "|---|---|---|",
        f"| 1. input pipeline | step on tf.data pipeline {p['pipeline_step_seconds']:.4f} s vs in memory "
        f"{p['in_memory_step_seconds']:.4f} s (unaugmented pipeline {p['pipeline_unaugmented_step_seconds']:.4f} s) "
        f"| ratio **{p['ratio']:.3f}** (goal <= {p['goal']}: {verdict}; unaugmented {p['ratio_unaugmented']:.3f}) |",
        f"| 1. where it goes | reading a batch without training: {p['pipeline_alone_batch_seconds']:.4f} s augmented, "
        f"{p['pipeline_alone_unaugmented_batch_seconds']:.4f} s not (an epoch's first batch "
        f"{p['pipeline_alone_first_batch_seconds']:.4f} s); deleting an epoch's iterator: median "
        f"{p['iterator_teardown_seconds']['pipeline']:.3f} s, max {max(p['all_iterator_teardown_seconds']['pipeline']):.3f} s "
        f"(tf.data autotune off: max {max(p['all_iterator_teardown_seconds']['pipeline_autotune_off']):.3f} s) "
        f"| ratio without the iterator deletion {p['ratio_without_teardown']:.3f}; with autotune off "
        f"{p['ratio_autotune_off']:.3f} |",
        f"| 2. embedding cache | epoch recomputing the backbone {c['recomputing_epoch_seconds']:.3f} s vs on cached "
        f"features {c['cached_epoch_seconds']:.4f} s; cache built once in {c['cache_build_seconds']:.3f} s "
        f"| speed-up **{c['speedup']:.1f}x**, break-even after {_fmt(c['break_even_epochs'])} epochs |",
        *[_compute_row(name, result, k) for name, result in k["steps"].items()],
        "",
        f"3. Inference ({i['latency_calls']} single-image calls; throughput at batch {i['throughput_batch_size']}; "
        f"TFLite vs Keras max abs diff: float32 {i['parity_on_test_images']['tflite_float32_max_abs_diff']:.1e}, "
        f"int8 {i['parity_on_test_images']['tflite_int8_max_abs_diff']:.1e})",
        "",
        "| variant | latency median (ms) | latency p90 (ms) | throughput (examples/s) |",
        "|---|---|---|---|",
    ]
    for name, v in i["variants"].items():
        lines.append(f"| {name} | {v['latency_ms_median']:.2f} | {v['latency_ms_p90']:.2f} | "
                     f"{v['throughput_examples_per_second']:.1f} |")
    lines += ["", "5. Scaling (frozen-backbone training step, random images in memory)", "",
              "| batch | image px | s / step | ms / example |", "|---|---|---|---|"]
    for row in report["scaling"]["batch_size"] + report["scaling"]["image_size"]:
        lines.append(f"| {row['batch_size']} | {row['image_size']} | {row['step_seconds']:.4f} | "
                     f"{1000 * row['seconds_per_example']:.2f} |")
    lines += ["", "Where the time went (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)


def _compute_row(name, result, compute_report):
    matmul = compute_report["matmul"]
    measured = (f"{result['step_flops'] / 1e9:.2f} GFLOP (profiler) per step of {compute_report['batch_size']} in "
                f"{result['step_seconds']:.4f} s = {result['achieved_gflops']:.1f} GFLOP/s")
    if result["uncounted_op_types"]:
        measured += (f" (3 x forward FLOPs: {result['achieved_gflops_forward_x3']:.1f} GFLOP/s; the profiler has no "
                     f"FLOP rule for {', '.join(result['uncounted_op_types'])})")
    measured += f"; matmul {matmul['size']}x{matmul['size']}: {matmul['gflops_median']:.1f} GFLOP/s"
    return f"| 4. compute, {name.replace('_', ' ')} step | {measured} | **{result['percent_of_matmul']:.1f}%** of matmul |"


def _fmt(value):
    return "n/a (no saving)" if value is None else f"{value:.2f}"
