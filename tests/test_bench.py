import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import bench, cli, config

# Even smaller than --smoke: 32 px images, one round, two sizes per scaling axis.
TINY = ["data.image_size=32", "bench.rounds=1", "bench.cached_rounds=2", "bench.compute_steps=1",
        "bench.latency_calls=3", "bench.throughput_calls=1", "bench.matmul_size=256", "bench.matmul_repeats=2",
        "bench.scaling_batch_sizes=[2, 4]", "bench.scaling_image_sizes=[32, 40]", "bench.scaling_steps=1",
        "export.representative_images=8"]
SECTIONS = ("input_pipeline", "embedding_cache", "inference", "compute", "scaling")


def _numbers(value, path=""):
    """(path, number) of every int or float in a nested JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_smoke_bench_measures_every_section_and_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli.main(["bench", "--smoke", "--out", str(out), *sum((["--set", s] for s in TINY), [])]) == 0
    printed = capsys.readouterr().out
    report = json.load(open(out / "bench.json"))
    for section in SECTIONS:
        numbers = list(_numbers(report[section], section))
        assert numbers, section
        for path, number in numbers:
            if ".parity_on_test_images." in path:
                assert 0 <= number < 1.5, path  # probability differences from Keras: zero is fine
            elif "teardown" in path and "ratio" not in path:
                assert math.isfinite(number) and number >= 0, (path, number)  # seconds; zero is fine
            else:
                assert math.isfinite(number) and number > 0, (path, number)
    assert report["model"]["pretrained"] is False and "randomly initialised" in report["note"]
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["tensorflow"] == tf.__version__

    pipeline = report["input_pipeline"]
    assert pipeline["ratio"] == pipeline["pipeline_step_seconds"] / pipeline["in_memory_step_seconds"]
    assert pipeline["met_goal"] == (pipeline["ratio"] <= 1.05)
    assert pipeline["ratio_autotune_off"] == (pipeline["pipeline_autotune_off_step_seconds"]
                                              / pipeline["in_memory_step_seconds"])
    assert pipeline["in_memory_step_seconds"] == np.median(pipeline["all_step_seconds"]["in_memory"])
    assert pipeline["ratio_without_teardown"] == (pipeline["pipeline_step_seconds_without_teardown"]
                                                  / pipeline["in_memory_step_seconds"])
    assert pipeline["examples_per_epoch"] == report["data"]["split_sizes"]["train"]
    cache = report["embedding_cache"]
    assert cache["speedup"] == cache["recomputing_epoch_seconds"] / cache["cached_epoch_seconds"]
    assert cache["recomputing_epoch_seconds"] == pipeline["epoch_seconds"]["pipeline_unaugmented"]
    assert cache["break_even_epochs"] == pytest.approx(
        cache["cache_build_seconds"] / (cache["recomputing_epoch_seconds"] - cache["cached_epoch_seconds"]))
    assert cache["feature_shape"][0] == report["data"]["split_sizes"]["train"]

    inference = report["inference"]
    assert set(inference["variants"]) == {"tflite_float32", "tflite_int8", "keras_predict", "keras_call", "tf_function"}
    assert inference["parity_on_test_images"]["tflite_float32_max_abs_diff"] <= 1e-4

    compute = report["compute"]
    frozen, all_layers = compute["steps"]["frozen_backbone"], compute["steps"]["all_layers"]
    for step in (frozen, all_layers):
        assert step["achieved_gflops"] == step["step_flops"] / step["step_seconds"] / 1e9
        assert step["percent_of_matmul"] == 100 * step["achieved_gflops"] / compute["matmul"]["gflops_median"]
        assert step["step_flops"] == sum(step["flops_by_op"].values())
    # The frozen step is the forward pass plus a small head; training every layer adds the backward
    # convolutions (the profiler skips the depthwise ones, so less than 3x forward).
    assert compute["forward_flops"] <= frozen["step_flops"] < 1.05 * compute["forward_flops"]
    assert 2 * compute["forward_flops"] < all_layers["step_flops"] < 3 * compute["forward_flops"]
    assert "Conv2DBackpropFilter" not in frozen["flops_by_op"] and "Conv2DBackpropFilter" in all_layers["flops_by_op"]

    scaling = report["scaling"]
    assert [row["batch_size"] for row in scaling["batch_size"]] == [2, 4]
    assert [row["image_size"] for row in scaling["image_size"]] == [32, 40]
    for row in scaling["batch_size"] + scaling["image_size"]:
        assert row["seconds_per_example"] == row["step_seconds"] / row["batch_size"]

    table = (out / "bench.md").read_text()
    for words in ("input pipeline", "embedding cache", "Inference", "compute", "Scaling", "randomly initialised",
                  "tflite_int8", "keras_predict", "Where the time went"):
        assert words in table, words
    assert table.strip() in printed


def test_profiler_counts_a_dense_matmul_as_2mnk():
    m, k, n = 8, 96, 40
    dense = keras.layers.Dense(n, use_bias=False)
    dense.build((None, k))
    concrete = tf.function(lambda x: dense(x)).get_concrete_function(tf.TensorSpec([m, k], tf.float32))
    total, by_op = bench.graph_flops(concrete)
    assert total == 2 * m * n * k and by_op == {"MatMul": 2 * m * n * k}
    assert bench.uncounted_heavy_ops(concrete, by_op) == []


def test_frozen_train_step_changes_only_the_head():
    cfg = config.load(bench.Config, base=bench.SMOKE, overrides=["data.image_size=32"])
    model, backbone = bench.frozen_classifier(cfg, 3)
    step = tf.function(bench.make_train_step(model, 1e-2))
    before = {w.path: w.numpy().copy() for w in model.weights}
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    assert np.isfinite(float(step(tf.constant(images), tf.constant([0, 1, 2, 0]))))
    changed = {w.path for w in model.weights if not np.array_equal(before[w.path], w.numpy())}
    assert changed == {"probabilities/kernel", "probabilities/bias"}


@pytest.mark.parametrize("options, message", [
    (["--set", "bench.no_such_setting=1"], "Unknown config key config.bench.no_such_setting"),
    (["--set", "bench.scaling_batch_sizes=[0, 8]"], "bench.scaling_batch_sizes"),
    (["--set", "bench.rounds=0"], "bench.rounds"),
    (["--config", "no/such/config.yaml"], "does not exist"),
])
def test_bad_options_exit_2_with_a_message(options, message, tmp_path, capsys):
    assert cli.main(["bench", "--smoke", *options, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()
