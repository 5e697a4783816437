"""
Title: Fundamentals: gradient descent, activations, losses, optimizers and batch norm
Description: The mechanics under transfer learning, each written from its equations and checked
against Keras to the digit: linear regression by gradient descent vs least squares, vanishing
gradients, five losses, four optimizers that run in `fit`, batch norm, and softmax vs SVM.

    tfcourse run fundamentals            # every part, under 2 minutes on 2 CPU cores
    tfcourse run fundamentals --smoke    # smaller problems, seconds

Each part writes its figures into report.json and its plots as PNG files.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, runs
from tfcourse.from_scratch import losses, optimizers
from tfcourse.from_scratch.batch_norm import BatchNorm
from tfcourse.viz import plt, save_figure


@dataclasses.dataclass
class Config:
    seed: int = 0
    regression_points: int = 200
    regression_steps: int = 300
    regression_learning_rate: float = 0.1
    deep_mlp_depth: int = 20  # layers of the sigmoid and ReLU MLPs compared for vanishing gradients
    deep_mlp_width: int = 64
    optimizer_steps: int = 100  # full-batch steps per optimizer, in `fit`
    classifier_points: int = 300  # 2-D points of the softmax vs SVM problem
    classifier_epochs: int = 200

    def validate(self):
        for name, value in dataclasses.asdict(self).items():
            if name != "seed" and value <= 0:
                raise UserError(f"{name} = {value} must be positive.")


SMOKE = {"regression_steps": 50, "deep_mlp_depth": 8, "optimizer_steps": 20, "classifier_epochs": 30}


def max_abs_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ## 1. Linear regression: gradient descent vs the closed form


def linear_regression(config, run_dir):
    rng = np.random.default_rng(config.seed)
    x = rng.uniform(-2, 2, config.regression_points).astype("float32")
    y = (1.5 * x - 0.7 + rng.normal(0, 0.4, x.shape)).astype("float32")
    w, b = tf.Variable(0.0), tf.Variable(0.0)
    loss_curve = []
    for _ in range(config.regression_steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(w * x + b - y))
        dw, db = tape.gradient(loss, [w, b])
        w.assign_sub(config.regression_learning_rate * dw)
        b.assign_sub(config.regression_learning_rate * db)
        loss_curve.append(float(loss))
    # Least squares: minimise ||A [w, b] - y||^2 with A = [x, 1].
    (w_star, b_star), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1).astype("float64"), y.astype("float64"), rcond=None)
    final_loss = float(np.mean((float(w) * x + float(b) - y) ** 2))
    optimal_loss = float(np.mean((w_star * x + b_star - y) ** 2))

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.scatter(x, y, s=8, alpha=0.5, label="data")
    grid = np.linspace(-2, 2, 2)
    left.plot(grid, float(w) * grid + float(b), "r", label=f"gradient descent: y = {float(w):.3f}x {float(b):+.3f}")
    left.plot(grid, w_star * grid + b_star, "k--", label=f"least squares: y = {w_star:.3f}x {b_star:+.3f}")
    left.legend(fontsize=8)
    left.set_title("fit")
    right.semilogy(np.asarray(loss_curve) - optimal_loss + 1e-12)
    right.set(xlabel="step", ylabel="MSE - optimal MSE", title="loss gap per step (log)")
    save_figure(figure, os.path.join(run_dir, "linear_regression.png"))
    return {
        "gradient_descent": {"w": float(w), "b": float(b), "mse": final_loss},
        "least_squares": {"w": float(w_star), "b": float(b_star), "mse": optimal_loss},
        "gap": {"w": abs(float(w) - w_star), "b": abs(float(b) - b_star), "mse": final_loss - optimal_loss},
        "steps": config.regression_steps,
    }


# ## 2. Activations and the vanishing gradient


def activations(config, run_dir):
    z = tf.constant(np.linspace(-6, 6, 241), tf.float32)
    functions = {"sigmoid": tf.sigmoid, "tanh": tf.tanh, "relu": tf.nn.relu}
    figure, (values, slopes) = plt.subplots(1, 2, figsize=(11, 4))
    for name, f in functions.items():
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = f(z)
        values.plot(z, out, label=name)
        slopes.plot(z, tape.gradient(out, z), label=name)
    values.set_title("activation")
    slopes.set_title("its gradient (sigmoid peaks at 0.25)")
    for ax in (values, slopes):
        ax.legend()
        ax.grid(alpha=0.3)
    save_figure(figure, os.path.join(run_dir, "activations.png"))

    # The gradient reaching each layer of a deep MLP, for one batch: the same init, only the activation differs.
    rng = np.random.default_rng(config.seed)
    x = rng.normal(size=(128, config.deep_mlp_width)).astype("float32")
    target = rng.normal(size=(128, 1)).astype("float32")
    norms = {}
    for name in ("sigmoid", "relu"):
        keras.utils.set_random_seed(config.seed)
        inputs = keras.Input((config.deep_mlp_width,))
        h = inputs
        for _ in range(config.deep_mlp_depth):
            h = keras.layers.Dense(config.deep_mlp_width, activation=name)(h)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        kernels = [layer.kernel for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - target))
        norms[name] = [float(tf.norm(g)) for g in tape.gradient(loss, kernels)]
    figure, ax = plt.subplots(figsize=(7, 4))
    for name, values_ in norms.items():
        ax.semilogy(range(1, len(values_) + 1), values_, "o-", label=name)
    ax.set(xlabel="layer (1 = nearest the input)", ylabel="||dLoss/dW||", title=f"{config.deep_mlp_depth}-layer MLP, one batch")
    ax.legend()
    save_figure(figure, os.path.join(run_dir, "vanishing_gradient.png"))
    return {
        "depth": config.deep_mlp_depth,
        "first_layer_gradient_norm": {name: v[0] for name, v in norms.items()},
        "last_layer_gradient_norm": {name: v[-2] for name, v in norms.items()},
        "relu_over_sigmoid_at_first_layer": norms["relu"][0] / norms["sigmoid"][0],
    }


# ## 3. Losses, checked against Keras


def loss_checks(config, run_dir):
    rng = np.random.default_rng(config.seed)
    n, k = 256, 10
    labels = rng.integers(0, k, n)
    one_hot = np.eye(k, dtype="float32")[labels]
    scores = rng.normal(0, 3, (n, k)).astype("float32")
    probabilities = rng.uniform(0.001, 1, (n, k)).astype("float32")
    binary_labels = rng.choice([-1.0, 1.0], (n, 4)).astype("float32")
    targets = rng.normal(size=(n, k)).astype("float32")
    pairs = {
        "mse": (losses.mean_squared_error(targets, scores), keras.losses.mean_squared_error(targets, scores)),
        "crossentropy_from_logits": (
            losses.categorical_crossentropy_from_logits(one_hot, scores),
            keras.losses.categorical_crossentropy(one_hot, scores, from_logits=True),
        ),
        "crossentropy_from_probabilities": (
            losses.categorical_crossentropy_from_probabilities(one_hot, probabilities),
            keras.losses.categorical_crossentropy(one_hot, probabilities),
        ),
        "binary_hinge": (losses.binary_hinge(binary_labels, scores[:, :4]), keras.losses.hinge(binary_labels, scores[:, :4])),
        "multiclass_hinge": (losses.multiclass_hinge(one_hot, scores), keras.losses.categorical_hinge(one_hot, scores)),
    }
    # How each loss charges a binary example as a function of its margin m = y * s.
    margin = np.linspace(-3, 3, 121).astype("float32")
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.plot(margin, np.log1p(np.exp(-margin)), label="cross-entropy (logistic)")
    ax.plot(margin, np.maximum(0, 1 - margin), label="hinge")
    ax.plot(margin, (1 - margin) ** 2, label="squared error to y")
    ax.set(xlabel="margin y*s", ylabel="loss", ylim=(0, 5), title="losses of one binary example")
    ax.legend()
    save_figure(figure, os.path.join(run_dir, "losses.png"))
    return {name: {"max_abs_diff_vs_keras": max_abs_diff(ours, ref)} for name, (ours, ref) in pairs.items()}


# ## 4. Optimizers written from their update rules, in `fit`


def _two_moons(rng, n):
    angle = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.stack([np.cos(angle) + label * 1.0, np.sin(angle) * (1 - 2 * label) + label * 0.4], 1)
    return (x + rng.normal(0, 0.1, x.shape)).astype("float32"), label


def optimizer_checks(config, run_dir):
    x, y = _two_moons(np.random.default_rng(config.seed), 256)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))  # full batch: one step per epoch
    ours = {
        "sgd": optimizers.SGD(0.3),
        "momentum": optimizers.Momentum(0.1, momentum=0.9),
        "rmsprop": optimizers.RMSprop(0.01),
        "adam": optimizers.Adam(0.02),
    }
    results, curves = {}, {}
    for name, optimizer in ours.items():
        trained = {}
        for source, opt in (("ours", optimizer), ("keras", optimizers.keras_twin(optimizer))):
            keras.utils.set_random_seed(config.seed)
            inputs = keras.Input((2,))
            hidden = keras.layers.Dense(32, activation="tanh")(inputs)
            model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
            model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
            history = model.fit(data, epochs=config.optimizer_steps, verbose=0, shuffle=False).history
            trained[source] = (model, history)
        (model, history), (reference, reference_history) = trained["ours"], trained["keras"]
        curves[name] = (history["loss"], reference_history["loss"])
        results[name] = {
            "steps": int(model.optimizer.iterations),
            "max_abs_weight_diff_vs_keras": max(map(max_abs_diff, model.get_weights(), reference.get_weights())),
            "max_abs_loss_diff_vs_keras": max_abs_diff(history["loss"], reference_history["loss"]),
            "final_loss": history["loss"][-1],
            "final_accuracy": history["accuracy"][-1],
        }
    figure, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.5), sharey=True)
    for ax, (name, (curve, reference_curve)) in zip(axes, curves.items()):
        ax.plot(curve, label="ours")
        ax.plot(reference_curve, "--", label="keras")
        ax.set(title=name, xlabel="step")
    axes[0].set_ylabel("training loss")
    axes[0].legend()
    save_figure(figure, os.path.join(run_dir, "optimizers.png"))
    return results


# ## 5. Batch normalization written from its equations


def batch_norm_checks(config, run_dir):
    rng = np.random.default_rng(config.seed)
    ours, reference = BatchNorm(), keras.layers.BatchNormalization()
    # A loss linear in y with random weights: no gradient is zero by symmetry (sum(y^2) would make
    # d/d beta vanish in training mode, where y is centred over the batch).
    weights = tf.constant(rng.normal(size=(32, 6)), tf.float32)
    results, means = {}, {"ours": [], "keras": []}
    for step in range(30):
        x = tf.constant(rng.normal(2.0, 3.0, (32, 6)), tf.float32)
        for training in (True, False):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                y_ours, y_reference = ours(x, training=training), reference(x, training=training)
                loss_ours = tf.reduce_sum(y_ours * weights)
                loss_reference = tf.reduce_sum(y_reference * weights)
            grads = tape.gradient(loss_ours, [x, ours.gamma, ours.beta])
            reference_grads = tape.gradient(loss_reference, [x, reference.gamma, reference.beta])
            mode = "training" if training else "inference"
            check = results.setdefault(mode, {"max_abs_output_diff": 0.0, "max_relative_gradient_diff": 0.0})
            check["max_abs_output_diff"] = max(check["max_abs_output_diff"], max_abs_diff(y_ours, y_reference))
            for g, r in zip(grads, reference_grads):
                relative = max_abs_diff(g, r) / float(tf.reduce_max(tf.abs(r)))
                check["max_relative_gradient_diff"] = max(check["max_relative_gradient_diff"], relative)
        means["ours"].append(ours.moving_mean.numpy().copy())
        means["keras"].append(reference.moving_mean.numpy().copy())
    results["moving_statistics_max_abs_diff"] = max(
        max_abs_diff(ours.moving_mean, reference.moving_mean), max_abs_diff(ours.moving_variance, reference.moving_variance)
    )
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.asarray(means["ours"])[:, 0], label="ours")
    ax.plot(np.asarray(means["keras"])[:, 0], "--", label="keras")
    ax.axhline(2.0, color="gray", lw=0.8)
    ax.set(xlabel="training step", ylabel="moving mean of feature 0", title="moving mean approaches the data mean (2.0)")
    ax.legend()
    save_figure(figure, os.path.join(run_dir, "batch_norm.png"))
    return results


# ## 6. Softmax vs SVM: one linear classifier, two losses


def expected_calibration_error(probabilities, labels, bins=10):
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(-1)
    correct = probabilities.argmax(-1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return float(sum(
        np.sum(which == b) / len(labels) * abs(correct[which == b].mean() - confidence[which == b].mean())
        for b in range(bins) if np.any(which == b)
    ))


def softmax_vs_svm(config, run_dir):
    rng = np.random.default_rng(config.seed)
    centres = np.array([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
    labels = rng.integers(0, 3, config.classifier_points)
    x = (centres[labels] + rng.normal(0, 1.0, (len(labels), 2))).astype("float32")
    one_hot = np.eye(3, dtype="float32")[labels]
    results, models = {}, {}
    for name, loss in (("softmax", losses.categorical_crossentropy_from_logits), ("svm", losses.multiclass_hinge)):
        keras.utils.set_random_seed(config.seed)
        inputs = keras.Input((2,))
        model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        model.compile(optimizers.SGD(0.1), loss)
        model.fit(x, one_hot, batch_size=len(x), epochs=config.classifier_epochs, verbose=0)
        scores = model.predict(x, verbose=0)
        probabilities = tf.nn.softmax(scores).numpy()  # for the SVM too: its scores read as if they were logits
        results[name] = {
            "accuracy": float(np.mean(scores.argmax(-1) == labels)),
            "expected_calibration_error": expected_calibration_error(probabilities, labels),
            "mean_confidence": float(probabilities.max(-1).mean()),
            "negative_log_likelihood": float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12))),
        }
        models[name] = model
    low, high = x.min(0) - 0.5, x.max(0) + 0.5
    axes_values = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
    grid = np.stack(axes_values, -1).reshape(-1, 2).astype("float32")
    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (name, model) in zip(axes, models.items()):
        regions = model.predict(grid, verbose=0).argmax(-1).reshape(200, 200)
        ax.contourf(grid[:, 0].reshape(200, 200), grid[:, 1].reshape(200, 200), regions, alpha=0.25, levels=[-0.5, 0.5, 1.5, 2.5], cmap="brg")
        ax.scatter(x[:, 0], x[:, 1], c=labels, s=8, cmap="brg")
        r = results[name]
        ax.set_title(f"{name}: accuracy {r['accuracy']:.3f}, ECE {r['expected_calibration_error']:.3f}")
    save_figure(figure, os.path.join(run_dir, "softmax_vs_svm.png"))
    return results


def run(config, run_dir):
    runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    timings = runs.Timings()
    report = {"lesson": "fundamentals", "config": dataclasses.asdict(config)}
    parts = {
        "linear_regression": linear_regression,
        "activations": activations,
        "losses": loss_checks,
        "optimizers": optimizer_checks,
        "batch_norm": batch_norm_checks,
        "softmax_vs_svm": softmax_vs_svm,
    }
    for name, part in parts.items():
        with timings(name):
            report[name] = part(config, run_dir)
        print(f"{name}: done in {timings[name]} s")
    report["timings_seconds"] = dict(timings)
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def summary_markdown(report):
    lr, act = report["linear_regression"], report["activations"]
    lines = [
        "# fundamentals run",
        "",
        f"- Linear regression after {lr['steps']} steps: w gap {lr['gap']['w']:.2e}, b gap {lr['gap']['b']:.2e}, "
        f"MSE gap {lr['gap']['mse']:.2e} against least squares.",
        f"- Vanishing gradient ({act['depth']} layers): first-layer gradient norm sigmoid "
        f"{act['first_layer_gradient_norm']['sigmoid']:.2e} vs ReLU {act['first_layer_gradient_norm']['relu']:.2e}.",
        "",
        "| check against Keras | largest difference |",
        "|---|---|",
    ]
    lines += [f"| loss {k} | {v['max_abs_diff_vs_keras']:.2e} |" for k, v in report["losses"].items()]
    lines += [f"| optimizer {k} ({v['steps']} steps), weights | {v['max_abs_weight_diff_vs_keras']:.2e} |"
              for k, v in report["optimizers"].items()]
    for mode in ("training", "inference"):
        bn = report["batch_norm"][mode]
        lines.append(f"| batch norm {mode}: output / relative gradient | {bn['max_abs_output_diff']:.2e} / "
                     f"{bn['max_relative_gradient_diff']:.2e} |")
    lines.append(f"| batch norm moving statistics | {report['batch_norm']['moving_statistics_max_abs_diff']:.2e} |")
    sv = report["softmax_vs_svm"]
    lines += ["", "| linear classifier | accuracy | ECE | mean confidence |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['accuracy']:.3f} | {v['expected_calibration_error']:.3f} | {v['mean_confidence']:.3f} |"
              for k, v in sv.items()]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_seconds"].items()), ""]
    return "\n".join(lines)
