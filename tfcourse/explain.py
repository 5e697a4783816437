"""What did the model look at? Saliency maps, Grad-CAM and activation grids for Keras image classifiers.

    tfcourse explain RUN_DIR IMAGE... [--out DIR] [--layers NAME ...] [--methods vanilla smoothgrad gradcam]

The methods are functions of (Keras model, images, ...), for any functional image classifier,
including the image lessons' classifiers, which nest the backbone model inside the classifier:
- `vanilla_gradients`: |d score / d pixel|, the largest over colour channels (Simonyan et al. 2013);
- `smoothgrad`: the gradients averaged over noisy copies of the image (Smilkov et al. 2017);
- `grad_cam`: a feature map weighted by the pooled gradients of the score, ReLU, upsampled to the
  image (Selvaraju et al. 2017); by default the last 4-D feature map before global pooling;
- `layer_activations`: the outputs of chosen layers, for activation grids.

The score explained is the class's logit where the output is a softmax Dense layer (a softmax
probability near 1 has a vanishing gradient), else the model's output; the class is the
predicted one unless given. Gradients are taken with respect to the model's own input pixels
(0-255, the uint8 input read as float32).

Loading: `load_run` reads the Keras model (`.keras`, loaded in Keras' safe mode, which refuses
lambdas and other arbitrary code) that the run exported. Even so, a `.keras` file names the layer
classes to build and a run directory may hold SavedModels (programs): explain only run
directories you trust.
"""

import dataclasses
import glob
import importlib
import json
import os
import pkgutil
import weakref
import zipfile

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, viz
from tfcourse.data import images as data_images

METHODS = ("vanilla", "smoothgrad", "gradcam")
# Layers that only prepare pixels: never the Grad-CAM feature map.
_PREPROCESSING = (keras.layers.InputLayer, keras.layers.Rescaling, keras.layers.Normalization, keras.layers.Resizing)


# ## Finding layers inside nested models


def _graph_layers(model, prefix=()):
    """[(path of names from `model` down, layer)] in graph order, descending into nested models."""
    found = []
    for layer in model.layers:
        path = (*prefix, layer.name)
        if isinstance(layer, keras.Model):
            found += _graph_layers(layer, path)
        found.append((path, layer))
    return found


def _output_rank(layer):
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer called more than once, or never
        return None


def feature_map_layers(model):
    """Paths of the layers with 4-D outputs from the first layer with weights on (feature maps, not pixels)."""
    layers = _graph_layers(model)
    weighted = [i for i, (_, layer) in enumerate(layers) if layer.weights and not isinstance(layer, keras.Model)]
    if not weighted:
        return []
    return [
        path for path, layer in layers[weighted[0]:]
        if _output_rank(layer) == 4 and not isinstance(layer, (keras.Model, *_PREPROCESSING))
    ]


def default_feature_layer(model):
    """The last 4-D feature map (before global pooling): what Grad-CAM explains by default."""
    candidates = feature_map_layers(model)
    if not candidates:
        raise UserError(
            f"Model {model.name!r} has no 4-D convolutional feature map that Keras can see (its backbone may be "
            "one opaque layer, such as a TF Hub module): Grad-CAM and activation grids need one. "
            "Use the vanilla or smoothgrad methods."
        )
    return candidates[-1]


def resolve_layer(model, name):
    """A layer name ("out_relu") or path ("mobilenetv2_1.00_224/out_relu") -> its path of names."""
    wanted = tuple(name.split("/"))
    matches = [path for path, _ in _graph_layers(model) if path[-len(wanted):] == wanted]
    if len(matches) != 1:
        known = ", ".join("/".join(p) for p in feature_map_layers(model)) or "none"
        problem = "matches no layer" if not matches else f"matches {len(matches)} layers"
        raise UserError(f"Layer {name!r} {problem} of model {model.name!r}. Its 4-D feature maps: {known}.")
    return matches[0]


def _layer_name(path):
    return "/".join(path)


# ## One model for all methods: float pixels in, chosen layer outputs and class scores out


class _SoftmaxLogits(keras.layers.Layer):
    """The pre-softmax output of a softmax Dense layer, sharing its weights (never saved)."""

    def __init__(self, dense, **kwargs):
        super().__init__(name=dense.name + "_logits", **kwargs)
        self.dense = dense

    def call(self, x):
        x = keras.ops.matmul(keras.ops.cast(x, self.dense.kernel.dtype), self.dense.kernel)
        return x + self.dense.bias if self.dense.use_bias else x


def _is_softmax_dense(layer):
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Dense) and activation is keras.activations.softmax


def class_output_index(model):
    """Which output holds the class scores: the one named like "probabilities" or "class", else the first."""
    names = [t._keras_history.operation.name for t in model.outputs]
    for i, name in enumerate(names):
        if "prob" in name or "class" in name:
            return i
    return 0


def _tapped(model, paths, float_input, logits_of=None):
    """A functional model with `model`'s layers (same weights): inputs -> [outputs at `paths`..., outputs].

    Nested models holding a tapped layer are rebuilt the same way, recursively. With `float_input`,
    the input is float32 (to differentiate with respect to pixels). `logits_of` is a softmax Dense
    layer whose pre-activation replaces its output.
    """
    if isinstance(model, keras.Sequential):
        model = _as_functional(model)
    taps = {}

    def call(layer, *args, **kwargs):
        deeper = [p[1:] for p in paths if p[0] == layer.name and len(p) > 1]
        if deeper:
            *features, output = _tapped(layer, deeper, float_input=False)(*args, **kwargs)
            taps.update({(layer.name, *p): f for p, f in zip(deeper, features)})
        elif layer is logits_of:
            output = _SoftmaxLogits(layer)(*args, **kwargs)
        else:
            output = layer(*args, **kwargs)
        if (layer.name,) in paths:
            taps[(layer.name,)] = output
        return output

    if len(model.inputs) != 1:
        raise UserError(f"Model {model.name!r} has {len(model.inputs)} inputs; explanations need one image input.")
    shape = model.inputs[0].shape[1:]
    new_input = keras.Input(shape, dtype="float32" if float_input else model.inputs[0].dtype)
    clone = keras.models.clone_model(model, input_tensors=new_input, clone_function=lambda layer: layer, call_function=call)
    outputs = clone.outputs if len(clone.outputs) > 1 else clone.outputs[0]
    return keras.Model(new_input, [*(taps[p] for p in paths), outputs])


def _as_functional(model):
    x = inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    for layer in model.layers:
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)


_explanation_models = weakref.WeakKeyDictionary()


def explanation_model(model, layers=()):
    """float32 pixels -> [each layer's output (paths from `resolve_layer`)..., class scores [batch, classes]]."""
    layers = tuple(layers)
    cache = _explanation_models.setdefault(model, {})
    if layers not in cache:
        index = class_output_index(model)
        output_layer = model.outputs[index]._keras_history.operation
        logits_of = output_layer if _is_softmax_dense(output_layer) else None
        tapped = _tapped(model, list(layers), float_input=True, logits_of=logits_of)
        if len(model.outputs) > 1:  # keep only the class output
            tapped = keras.Model(tapped.inputs, [*tapped.outputs[: len(layers)], tapped.outputs[len(layers) + index]])
        cache[layers] = tapped
    return cache[layers]


# ## The methods


def _run(tapped, x):
    """The outputs of an `explanation_model` as a list (Keras returns a lone output bare)."""
    outputs = tapped(x, training=False)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _as_float(images):
    return tf.convert_to_tensor(np.asarray(images), tf.float32)


def predicted_classes(model, images, batch_size=32):
    scores = np.concatenate([
        np.asarray(_run(explanation_model(model), _as_float(images[i : i + batch_size]))[-1])
        for i in range(0, len(images), batch_size)
    ])
    return scores.argmax(-1)


def _selected(scores, class_indices):
    return tf.gather(scores, tf.constant(class_indices, tf.int32), batch_dims=1)


def input_gradients(model, images, class_indices=None, batch_size=32):
    """d score(class) / d pixels, [batch, height, width, channels]; the class is the predicted one by default."""
    if class_indices is None:
        class_indices = predicted_classes(model, images, batch_size)
    scores_model = explanation_model(model)
    gradients = []
    for start in range(0, len(images), batch_size):
        x = _as_float(images[start : start + batch_size])
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = _run(scores_model, x)[-1]
            selected = _selected(scores, np.asarray(class_indices)[start : start + batch_size])
        gradients.append(tape.gradient(selected, x).numpy())
    return np.concatenate(gradients)


def gradient_map(gradients):
    """Per pixel, the largest |gradient| over the colour channels: [batch, height, width]."""
    return np.abs(gradients).max(-1)


def vanilla_gradients(model, images, class_indices=None):
    """Vanilla-gradient saliency [batch, height, width]."""
    return gradient_map(input_gradients(model, images, class_indices))


def smoothgrad(model, images, class_indices=None, samples=25, noise=0.15, seed=0):
    """SmoothGrad saliency [batch, height, width]: gradients averaged over `samples` noisy copies.

    The noise is Gaussian with standard deviation `noise` times each image's value range
    (Smilkov et al. suggest 0.1 to 0.2). With `noise=0` it is the vanilla gradient.
    """
    if samples < 1 or noise < 0:
        raise UserError(f"SmoothGrad needs at least 1 sample and noise >= 0, not {samples} samples and noise {noise}.")
    images = np.asarray(images, np.float32)
    if class_indices is None:  # explain the class of the clean image
        class_indices = predicted_classes(model, images)
    ranges = (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))[:, None, None, None]
    rng = np.random.default_rng(seed)
    total = np.zeros_like(images)
    for _ in range(samples):
        noisy = images + rng.standard_normal(images.shape).astype(np.float32) * (noise * ranges)
        total += input_gradients(model, noisy, class_indices)
    return gradient_map(total / samples)


def grad_cam(model, images, class_indices=None, layer=None, upsample=True, batch_size=32):
    """Grad-CAM [batch, height, width] at the image's size (or the feature map's with `upsample=False`).

    `layer`: a name or path of a 4-D layer (nested models included); by default the last 4-D
    feature map before global pooling.
    """
    path = resolve_layer(model, layer) if layer else default_feature_layer(model)
    tapped = explanation_model(model, [path])
    if class_indices is None:
        class_indices = predicted_classes(model, images, batch_size)
    maps = []
    for start in range(0, len(images), batch_size):
        x = _as_float(images[start : start + batch_size])
        with tf.GradientTape() as tape:
            features, scores = _run(tapped, x)
            selected = _selected(scores, np.asarray(class_indices)[start : start + batch_size])
        gradients = tape.gradient(selected, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        maps.append(tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy())
    maps = np.concatenate(maps)
    if upsample:
        size = np.asarray(images).shape[1:3]
        maps = tf.image.resize(maps[..., None], size, method="bilinear").numpy()[..., 0]
    return maps


def layer_activations(model, images, layers, batch_size=32):
    """{layer name: outputs [batch, height, width, channels]} of 4-D layers given by name or path."""
    paths = [resolve_layer(model, name) for name in layers]
    for path in paths:
        rank = _output_rank(dict(_graph_layers(model))[path])
        if rank != 4:
            raise UserError(f"Layer {_layer_name(path)!r} has {rank}-D outputs; activation grids need a 4-D feature map.")
    tapped = explanation_model(model, paths)
    outputs = [_run(tapped, _as_float(images[i : i + batch_size]))[: len(paths)]
               for i in range(0, len(images), batch_size)]
    return {_layer_name(p): np.concatenate([np.asarray(o[j]) for o in outputs]) for j, p in enumerate(paths)}


def saliency_maps(model, images, methods=METHODS, class_indices=None, gradcam_layer=None, smoothgrad_samples=25,
                  smoothgrad_noise=0.15, seed=0):
    """{method: maps [batch, height, width]} for the chosen methods, all explaining the same classes."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UserError(f"Unknown explanation method(s) {unknown}; choose from: {', '.join(METHODS)}.")
    if class_indices is None:
        class_indices = predicted_classes(model, images)
    maps = {}
    for method in methods:
        if method == "vanilla":
            maps[method] = vanilla_gradients(model, images, class_indices)
        elif method == "smoothgrad":
            maps[method] = smoothgrad(model, images, class_indices, smoothgrad_samples, smoothgrad_noise, seed)
        else:
            maps[method] = grad_cam(model, images, class_indices, gradcam_layer)
    return maps


def mass_inside_box(maps, boxes):
    """Per map, the share of its total mass inside the box (top, left, bottom, right; pixels, end exclusive)."""
    shares = []
    for saliency, (top, left, bottom, right) in zip(np.abs(maps), boxes):
        total = saliency.sum()
        shares.append(float(saliency[top:bottom, left:right].sum() / total) if total > 0 else float("nan"))
    return np.asarray(shares)


# ## Pictures


def _normalised(saliency):
    """To [0, 1], clipped at the 99th percentile so that a few extreme pixels do not wash out the rest."""
    top = np.percentile(saliency, 99)
    return np.clip(saliency / top, 0, 1) if top > 0 else np.zeros_like(saliency)


def _show_image(ax, image):
    image = np.asarray(image, np.float32)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
    ax.axis("off")


def plot_overlay(image, saliency, path, title, method):
    """The image, and the map as a heatmap over a faded copy of it, side by side."""
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(7, 3.6))
    _show_image(left, image)
    left.set_title("image", fontsize=9)
    _show_image(right, np.asarray(image, np.float32) * 0.5 + 64)
    right.imshow(_normalised(saliency), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    right.set_title(method, fontsize=9)
    figure.suptitle(title, fontsize=10)
    viz.save_figure(figure, path)


def plot_activation_grid(image, activations, path, title, channels=16):
    """The most active channels of one image's [height, width, channels] activations, over the image."""
    import matplotlib.pyplot as plt

    order = np.argsort(-activations.mean(axis=(0, 1)))[:channels]
    columns = int(np.ceil(np.sqrt(len(order) + 1)))
    rows = int(np.ceil((len(order) + 1) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.8 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    _show_image(axes.flat[0], image)
    axes.flat[0].set_title("image", fontsize=8)
    size = np.asarray(image).shape[:2]
    upsampled = tf.image.resize(activations[..., order], size, method="bilinear").numpy()
    for ax, channel, k in zip(axes.flat[1:], order, range(len(order))):
        _show_image(ax, np.asarray(image, np.float32) * 0.4 + 76)
        ax.imshow(_normalised(np.maximum(upsampled[..., k], 0)), cmap="viridis", alpha=0.6, vmin=0, vmax=1)
        ax.set_title(f"channel {channel}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    viz.save_figure(figure, path)


# ## Runs and files


@dataclasses.dataclass
class LoadedRun:
    model: keras.Model
    model_path: str
    class_names: list
    lesson: str


def _register_custom_layers():
    """Imports the project's model modules, so that their registered layers load from .keras files."""
    import tfcourse.hub  # noqa: F401
    import tfcourse.models

    for module in pkgutil.iter_modules(tfcourse.models.__path__):
        importlib.import_module(f"tfcourse.models.{module.name}")


def load_keras_model(path):
    """keras.models.load_model in safe mode (the default, never turned off); errors name the file."""
    _register_custom_layers()
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path!r} is not a .keras file: a .keras model is a zip archive, and this file is not one.")
    try:
        return keras.models.load_model(path)
    except (ValueError, TypeError, OSError) as error:
        message = str(error).splitlines()[0].split(" If you trust the source")[0]  # safe mode is never turned off here
        if "Lambda" in message:
            message = ("the file contains a Lambda layer, that is arbitrary Python code, which Keras safe mode refuses "
                       f"to load ({message})")
        raise UserError(f"{path!r} cannot be loaded as a Keras model in safe mode: {message}") from None


def find_run_model(run_dir):
    """The .keras file of the model a run exported: checkpoints/<exported_variant>/best.keras.

    A run whose report names no exported variant is read where it has exactly one such file.
    A path to a .keras file is taken as it is.
    """
    if os.path.isfile(run_dir) and run_dir.endswith(".keras"):
        return run_dir
    report_path = os.path.join(run_dir, "report.json")
    if not os.path.isfile(report_path):
        raise UserError(f"{run_dir!r} is not a finished run directory: {report_path} is missing. "
                        "Give the run directory that `tfcourse run` printed, or a .keras file.")
    with open(report_path) as f:
        report = json.load(f)
    variant = report.get("exported_variant")
    if variant:
        path = os.path.join(run_dir, "checkpoints", variant, "best.keras")
        if not os.path.isfile(path):
            raise UserError(f"Run {run_dir!r} exported its {variant!r} model, but its Keras model {path} is "
                            "missing: gradients need the Keras model, not the SavedModel or TFLite export.")
        return path
    candidates = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "*", "best.keras")))
    if len(candidates) != 1:
        raise UserError(f"Run {run_dir!r} names no exported variant in report.json and has {len(candidates)} "
                        f"checkpoints/*/best.keras files {candidates}: give the .keras file to explain.")
    return candidates[0]


def load_run(run_dir):
    """The Keras model of a run of any image lesson, with its class names. Trusted run directories only."""
    path = find_run_model(run_dir)
    model = load_keras_model(path)
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise UserError(f"{path!r} is not an image model: its input is {[tuple(i.shape) for i in model.inputs]}.")
    directory = run_dir if os.path.isdir(run_dir) else os.path.dirname(path)
    labels_path = os.path.join(directory, "export", "labels.txt")
    report_path = os.path.join(directory, "report.json")
    report = json.load(open(report_path)) if os.path.isfile(report_path) else {}
    if os.path.isfile(labels_path):
        with open(labels_path) as f:
            class_names = f.read().splitlines()
    else:
        class_names = report.get("data", {}).get("class_names")
    num_classes = model.outputs[class_output_index(model)].shape[-1]
    if not class_names or len(class_names) != num_classes:
        class_names = [str(i) for i in range(num_classes)]
    return LoadedRun(model, path, class_names, report.get("lesson", "unknown"))


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def image_files(paths):
    """Files as given; folders searched recursively for image files. A missing path is an error."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(
                os.path.join(d, f) for d, _, names in os.walk(path) for f in names if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UserError(f"Image {path!r} does not exist.")
    if not files:
        raise UserError(f"No image files in {list(paths)}.")
    return files


def read_images(files, height, width, channels):
    """-> (uint8 images [n, height, width, channels], files read, skipped [{"path", "reason"}])."""
    pixels, read, skipped = [], [], []
    for path in files:
        image, problem = data_images.decode_or_reason(tf.io.read_file(path), channels)  # bombs refused unread
        if problem:
            skipped.append({"path": path, "reason": problem})
            continue
        resized = tf.image.resize(image, (height, width), antialias=True)
        pixels.append(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy())
        read.append(path)
    return np.stack(pixels) if pixels else np.zeros((0, height, width, channels), np.uint8), read, skipped


def explain_images(model, images, names, class_names, out_dir, methods=METHODS, layers=(), gradcam_layer=None,
                   smoothgrad_samples=25, smoothgrad_noise=0.15, seed=0):
    """Writes one overlay PNG per image and method, and an activation grid per image and layer.

    Returns ({method: maps}, [per image: {"name", "predicted", "probability", "pngs"}]).
    """
    os.makedirs(out_dir, exist_ok=True)
    images = np.asarray(images)
    probabilities = np.concatenate([
        np.asarray(model(images[i : i + 32], training=False))
        if len(model.outputs) == 1 else np.asarray(model(images[i : i + 32], training=False)[class_output_index(model)])
        for i in range(0, len(images), 32)
    ])
    predicted = probabilities.argmax(-1)
    maps = saliency_maps(model, images, methods, predicted, gradcam_layer, smoothgrad_samples, smoothgrad_noise, seed)
    activations = layer_activations(model, images, layers) if layers else {}
    results = []
    for i, name in enumerate(names):
        title = f"{name}: {class_names[predicted[i]]} ({probabilities[i, predicted[i]]:.2f})"
        stem = os.path.splitext(os.path.basename(name))[0]
        pngs = []
        for method, method_maps in maps.items():
            pngs.append(os.path.join(out_dir, f"{i:03d}_{stem}_{method}.png"))
            plot_overlay(images[i], method_maps[i], pngs[-1], title, method)
        for layer, outputs in activations.items():
            pngs.append(os.path.join(out_dir, f"{i:03d}_{stem}_activations_{layer.replace('/', '_')}.png"))
            plot_activation_grid(images[i], outputs[i], pngs[-1], f"{title}\nlayer {layer}")
        results.append({"name": name, "predicted": class_names[predicted[i]],
                        "probability": float(probabilities[i, predicted[i]]), "pngs": pngs})
    return maps, results


def explain_files(run_dir, paths, out_dir=None, methods=METHODS, layers=(), gradcam_layer=None,
                  smoothgrad_samples=25, smoothgrad_noise=0.15):
    """`tfcourse explain`: explains image files with a run's Keras model; returns a JSON-able summary."""
    run = load_run(run_dir)
    out_dir = out_dir or os.path.join(run_dir if os.path.isdir(run_dir) else os.path.dirname(run.model_path),
                                      "explanations")
    _, height, width, channels = run.model.inputs[0].shape
    files = image_files(paths)
    pixels, read, skipped = read_images(files, height, width, channels)
    if not read:
        raise UserError(f"None of the {len(files)} image file(s) could be decoded: {skipped[:3]}.")
    gradcam_layer = gradcam_layer or ("/".join(default_feature_layer(run.model)) if "gradcam" in methods else None)
    _, results = explain_images(run.model, pixels, read, run.class_names, out_dir, methods, layers, gradcam_layer,
                                smoothgrad_samples, smoothgrad_noise)
    return {
        "run": run_dir, "lesson": run.lesson, "model": run.model_path, "out_dir": out_dir, "methods": list(methods),
        "gradcam_layer": gradcam_layer, "layers": list(layers), "images": results,
        "num_skipped": len(skipped), "skipped": skipped,
    }
