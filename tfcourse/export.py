"""Export: a SavedModel taking raw uint8 images, three TFLite variants, each checked, then kept.

Everything is written to `<run>/export.tmp`, checked against the Keras model on the test split,
and only then moved to `<run>/export`, so a failed export never replaces a good one. TFLite models
run with `ai_edge_litert` (the deprecated `tf.lite.Interpreter` gave wrong outputs with its
default XNNPACK delegate on our stack).
"""

import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tfcourse import ExportCheckFailed, UserError
from tfcourse.models.movinet import stream_outputs
from tfcourse.models.sam import no_prompts
from tfcourse.models.tflite_import import op_names, open_interpreter

TFLITE_VARIANTS = ("float32", "dynamic_range", "int8")
_FORMAT_FILES = {
    "saved_model": "saved_model",
    "tflite": "model_float32.tflite",
    "tflite-dynamic": "model_dynamic_range.tflite",
    "tflite-int8": "model_int8.tflite",
}
FORMATS = tuple(_FORMAT_FILES)
SAVED_MODEL_TOLERANCE = 1e-4
FLOAT_TFLITE_TOLERANCE = 1e-4
KERAS_STREAM_TOLERANCE = 1e-5  # the stream form frame by frame vs the clip form, both Keras
STREAM_TFLITE_TOLERANCE = 1e-3  # the float32 stream TFLite frame by frame vs the Keras clip form


def convert_tflite(saved_model_dir, variant, representative_images=None):
    """Converts a SavedModel to TFLite: float32, dynamic-range or full-integer int8 (uint8 in/out).

    The converter's default op set is TFLite's builtins, so a model that would need the Flex
    delegate fails here instead of converting.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if variant == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in representative_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif variant != "float32":
        raise ValueError(f"Unknown TFLite variant {variant!r}; choose one of {TFLITE_VARIANTS}.")
    return converter.convert()


class TFLiteModel:
    """A TFLite model run with LiteRT (resized to each input's shape); quantized outputs are dequantized."""

    def __init__(self, path):
        self.interpreter = _tflite_interpreter(path)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._input_shape = None

    def __call__(self, images):
        images = np.asarray(images)
        if self._input_shape != images.shape:
            self.interpreter.resize_tensor_input(self.input["index"], list(images.shape))
            self.interpreter.allocate_tensors()
            self._input_shape = images.shape
        self.interpreter.set_tensor(self.input["index"], images.astype(self.input["dtype"]))
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if scale:
            return scale * (output.astype("float32") - zero_point)
        return output


def load_saved_model(path):
    """`tf.saved_model.load`, with a UserError naming `path` where it is not a readable SavedModel folder."""
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise UserError(f"{path!r} is not a SavedModel folder: it holds no saved_model.pb.")
    try:
        return tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise UserError(f"{path!r} cannot be loaded as a SavedModel: {str(error).splitlines()[0]}") from None


def _serve_signature(loaded, path):
    if "serve" not in loaded.signatures:
        raise UserError(f"SavedModel {path!r} has no `serve` signature (it has {sorted(loaded.signatures)}): "
                        "it is not a tfcourse export.")
    return loaded.signatures["serve"]


def _tflite_interpreter(path):
    """A LiteRT Interpreter of `path`, with a UserError naming it where it is not a TFLite model."""
    try:
        return Interpreter(model_path=path)
    except ValueError as error:
        raise UserError(f"{path!r} cannot be loaded as a TFLite model: {str(error).splitlines()[0]}") from None


def _read_export_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"The export's {path!r} cannot be read: {error}. Export the run again.") from None


class SavedModelClassifier:
    """The exported SavedModel's `serve` signature on uint8 image batches (or `input_dtype` ones)."""

    def __init__(self, path, input_dtype=tf.uint8):
        self.loaded = load_saved_model(path)  # kept: its variables live as long as it does
        self.serve = _serve_signature(self.loaded, path)
        self.input_dtype = input_dtype

    def __call__(self, images):
        return next(iter(self.serve(tf.constant(images, self.input_dtype)).values())).numpy()


def predict_batches(predict, images, batch_size=32):
    return np.concatenate([predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def keras_predictions(model, inputs):
    return predict_batches(lambda x: model.predict(x, verbose=0), inputs)


def top_k_classes(probabilities, class_names, k):
    """-> [{"class", "probability"}] of the k most probable classes, most probable first."""
    return [{"class": class_names[i], "probability": float(probabilities[i])} for i in np.argsort(-probabilities)[:k]]


def load_exported(run_dir, fmt="saved_model"):
    """Returns (predict function on uint8 image batches, image size, class names) of a run's export.

    The SavedModel is a program: only load exports of runs you trust.
    """
    export_dir = run_export_dir(run_dir)
    if fmt not in _FORMAT_FILES:
        raise UserError(f"--format {fmt!r} is not an export format; choose one of: {', '.join(FORMATS)}.")
    path = os.path.join(export_dir, _FORMAT_FILES[fmt])
    labels_path = os.path.join(export_dir, "labels.txt")
    if not os.path.exists(path) or not os.path.isfile(labels_path):
        raise UserError(
            f"{run_dir!r} holds no exported {fmt} model ({path} or labels.txt is missing); "
            "give the run directory that `tfcourse run` printed."
        )
    with open(labels_path) as f:
        class_names = f.read().splitlines()
    image_size = _read_export_json(os.path.join(export_dir, "export_metrics.json"))["image_size"]
    if fmt == "saved_model":
        predict = SavedModelClassifier(path)
    else:
        predict = TFLiteModel(path)
    return predict, image_size, class_names


def _accuracy(probabilities, labels):
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))


def export_classifier(model, run_dir, class_names, representative_images, test_images, test_labels,
                      max_quantized_accuracy_drop):
    """Writes and checks SavedModel + TFLite variants; returns their metrics. See module doc."""
    tmp_dir, final_dir = _fresh_export_dir(run_dir)
    image_size = int(model.input.shape[1])
    keras_probabilities = keras_predictions(model, test_images)
    keras_accuracy = _accuracy(keras_probabilities, test_labels)
    metrics = {"image_size": image_size, "keras": {"accuracy": keras_accuracy}}

    saved_model_dir = os.path.join(tmp_dir, "saved_model")
    start = time.perf_counter()
    model.export(saved_model_dir, format="tf_saved_model", verbose=False)
    probabilities = predict_batches(SavedModelClassifier(saved_model_dir), test_images)
    metrics["saved_model"] = _variant_metrics(probabilities, keras_probabilities, test_labels, saved_model_dir)
    metrics["saved_model"]["seconds"] = time.perf_counter() - start
    _check(metrics["saved_model"]["max_abs_diff"] <= SAVED_MODEL_TOLERANCE, "saved_model", metrics, tmp_dir)

    for variant in TFLITE_VARIANTS:
        start = time.perf_counter()
        path = os.path.join(tmp_dir, f"model_{variant}.tflite")
        with open(path, "wb") as f:
            f.write(convert_tflite(saved_model_dir, variant, representative_images))
        probabilities = predict_batches(TFLiteModel(path), test_images)
        metrics[variant] = _variant_metrics(probabilities, keras_probabilities, test_labels, path)
        metrics[variant]["seconds"] = time.perf_counter() - start
        if variant == "float32":
            _check(metrics[variant]["max_abs_diff"] <= FLOAT_TFLITE_TOLERANCE, variant, metrics, tmp_dir)
        else:
            drop = keras_accuracy - metrics[variant]["accuracy"]
            _check(drop <= max_quantized_accuracy_drop, variant, metrics, tmp_dir)

    with open(os.path.join(tmp_dir, "export_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    _keep(tmp_dir, final_dir, class_names)
    return metrics


def _variant_metrics(probabilities, keras_probabilities, labels, path):
    return {
        "accuracy": _accuracy(probabilities, labels),
        "max_abs_diff": float(np.max(np.abs(probabilities - keras_probabilities))),
        "top1_agreement": float(np.mean(probabilities.argmax(-1) == keras_probabilities.argmax(-1))),
        "size_bytes": _size(path),
    }


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _check(passed, variant, metrics, tmp_dir):
    if not passed:
        with open(os.path.join(tmp_dir, "export_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        raise ExportCheckFailed(
            f"The {variant} export failed its check against the Keras model: {metrics[variant]}. "
            f"Nothing was replaced; the rejected export is in {tmp_dir}."
        )


def _fresh_export_dir(run_dir):
    """-> (an empty `<run>/export.tmp` to write into, `<run>/export` where it goes once checked)."""
    final_dir = run_export_dir(run_dir)
    tmp_dir = final_dir + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    return tmp_dir, final_dir


def _keep(tmp_dir, final_dir, class_names):
    """Writes labels.txt beside the checked models and moves them into place."""
    with open(os.path.join(tmp_dir, "labels.txt"), "w") as f:
        f.write("\n".join(class_names) + "\n")
    _replace_dir(tmp_dir, final_dir)


def run_export_dir(run_dir):
    """`<run>/export`, after undoing a replacement a kill cut between its two renames (see `_replace_dir`)."""
    final_dir = os.path.join(run_dir, "export")
    if not os.path.exists(final_dir) and os.path.isdir(final_dir + ".old"):
        os.rename(final_dir + ".old", final_dir)
    return final_dir


def _replace_dir(new_dir, final_dir):
    """Moves `new_dir` to `final_dir`; an existing `final_dir` is kept aside until the move is done.

    A kill between the two renames leaves `final_dir.old`, which `run_export_dir` puts back.
    """
    old_dir = final_dir + ".old"
    shutil.rmtree(old_dir, ignore_errors=True)
    if os.path.exists(final_dir):
        os.rename(final_dir, old_dir)
    os.rename(new_dir, final_dir)
    shutil.rmtree(old_dir, ignore_errors=True)


def export_waveform_classifier(model, input_spec, run_dir, waveforms, labels, class_names):
    """Audio: SavedModel + TFLite float32 and dynamic-range with builtin ops only, checked, then kept.

    `model` maps one input of `input_spec` (a waveform, or a batch of one) to class probabilities;
    each test waveform is fed alone. float32 must match Keras within 1e-4; the dynamic-range
    model's accuracy is measured, not required. Records audio seconds processed per CPU second.
    """
    as_input = (lambda w: w) if len(input_spec.shape) == 1 else (lambda w: w[None])
    reference = np.stack([np.asarray(model(as_input(w))).reshape(-1) for w in waveforms])
    tmp_dir, final_dir = _fresh_export_dir(run_dir)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.call, input_signature=[input_spec])
    saved_model_dir = os.path.join(tmp_dir, "saved_model")
    archive.write_out(saved_model_dir, verbose=False)
    loaded = tf.saved_model.load(saved_model_dir)
    results = {"saved_model": _waveform_metrics(
        np.stack([loaded.serve(as_input(w)).numpy().reshape(-1) for w in waveforms]), reference, labels)}
    _check(results["saved_model"]["max_abs_diff"] <= SAVED_MODEL_TOLERANCE, "saved_model", results, tmp_dir)
    for variant in ("float32", "dynamic_range"):
        path = os.path.join(tmp_dir, f"model_{variant}.tflite")
        with open(path, "wb") as f:
            f.write(convert_tflite(saved_model_dir, variant))  # builtin ops only: no Flex delegate
        runner = TFLiteModel(path)
        start = time.process_time()
        probabilities = np.stack([runner(as_input(w)).reshape(-1) for w in waveforms])
        cpu_seconds = time.process_time() - start
        results[variant] = _waveform_metrics(probabilities, reference, labels)
        results[variant].update(size_bytes=os.path.getsize(path),
                                audio_seconds_per_cpu_second=sum(map(len, waveforms)) / 16000 / cpu_seconds)
        if variant == "float32":
            _check(results[variant]["max_abs_diff"] <= FLOAT_TFLITE_TOLERANCE, variant, results, tmp_dir)
    _keep(tmp_dir, final_dir, class_names)
    return results


def _waveform_metrics(probabilities, reference, labels):
    return {"accuracy": _accuracy(probabilities, labels), "max_abs_diff": float(np.abs(probabilities - reference).max())}


def export_feature_classifier(model, run_dir, class_names, test_inputs, test_labels, extra_metrics=None):
    """Float features in (e.g. keypoints), probabilities out: SavedModel + TFLite float32 and
    dynamic-range, each checked against Keras on `test_inputs`, then kept.

    The SavedModel and float32 TFLite must match Keras within 1e-4; the dynamic-range model's
    accuracy and difference are measured, not required. `extra_metrics` (e.g. the input's meaning)
    is written into export_metrics.json too; `load_feature_classifier` reads the export back.
    """
    tmp_dir, final_dir = _fresh_export_dir(run_dir)
    test_inputs = np.asarray(test_inputs, np.float32)
    metrics = _float_classifier_exports(model, tmp_dir, test_inputs, test_labels, keras_predictions(model, test_inputs))
    metrics = {**(extra_metrics or {}), **metrics}
    _write_metrics(metrics, tmp_dir)
    _keep(tmp_dir, final_dir, class_names)
    return metrics


def _float_classifier_exports(model, tmp_dir, test_inputs, test_labels, keras_probabilities):
    """Writes SavedModel + TFLite float32 and dynamic-range of a float-input classifier into `tmp_dir`;
    checks them against `keras_probabilities`, the Keras model's on `test_inputs` (float32). -> metrics."""
    metrics = {"input_shape": list(test_inputs.shape[1:]), "keras": {"accuracy": _accuracy(keras_probabilities, test_labels)}}
    saved_model_dir = os.path.join(tmp_dir, "saved_model")
    model.export(saved_model_dir, format="tf_saved_model", verbose=False)
    probabilities = predict_batches(SavedModelClassifier(saved_model_dir, tf.float32), test_inputs)
    metrics["saved_model"] = _variant_metrics(probabilities, keras_probabilities, test_labels, saved_model_dir)
    _check(metrics["saved_model"]["max_abs_diff"] <= SAVED_MODEL_TOLERANCE, "saved_model", metrics, tmp_dir)
    for variant in ("float32", "dynamic_range"):
        path = os.path.join(tmp_dir, f"model_{variant}.tflite")
        with open(path, "wb") as f:
            f.write(convert_tflite(saved_model_dir, variant))
        probabilities = predict_batches(TFLiteModel(path), test_inputs)
        metrics[variant] = _variant_metrics(probabilities, keras_probabilities, test_labels, path)
        if variant == "float32":
            _check(metrics[variant]["max_abs_diff"] <= FLOAT_TFLITE_TOLERANCE, variant, metrics, tmp_dir)
    return metrics


def _write_metrics(metrics, tmp_dir):
    with open(os.path.join(tmp_dir, "export_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)


def export_video_classifier(model, stream_model, run_dir, class_names, test_clips, test_labels):
    """Video: the clip classifier as a SavedModel and TFLite (float32, dynamic-range), and its stream
    form as a float32 TFLite model whose signature carries the states; each checked, then kept.

    The stream form runs every test clip one frame at a time from zero states, in Keras and in
    TFLite; its last output must equal the Keras clip model's within 1e-5 in Keras and 1e-3 in
    TFLite. Returns (metrics, the TFLite stream's probabilities after each frame [clips, frames, classes]).
    """
    test_clips = np.asarray(test_clips, np.float32)
    tmp_dir, final_dir = _fresh_export_dir(run_dir)
    # First, being cheap: a stream model that is not the clip model's stream form fails before any conversion.
    reference = keras_predictions(model, test_clips)
    keras_stream = predict_batches(lambda x: stream_outputs(stream_model, x), test_clips)
    stream_check = {"keras_stream": {"max_abs_diff": float(np.abs(keras_stream[:, -1] - reference).max())}}
    _check(stream_check["keras_stream"]["max_abs_diff"] <= KERAS_STREAM_TOLERANCE, "keras_stream", stream_check, tmp_dir)
    metrics = {**_float_classifier_exports(model, tmp_dir, test_clips, test_labels, reference), **stream_check}
    stream_dir = os.path.join(tmp_dir, "stream_saved_model")
    stream_model.export(stream_dir, format="tf_saved_model", verbose=False)
    path = os.path.join(tmp_dir, "stream_float32.tflite")
    with open(path, "wb") as f:
        f.write(convert_tflite(stream_dir, "float32"))  # builtin ops only, or it raises
    shutil.rmtree(stream_dir)  # the stream form is for TFLite; the clip SavedModel is the served one
    stream, seconds = TFLiteStream(path), []
    tflite_stream = np.stack([stream.run(clip[None], seconds)[0] for clip in test_clips])
    metrics["stream_float32"] = {
        **_variant_metrics(tflite_stream[:, -1], reference, test_labels, path),
        "ms_per_frame_median": 1000 * float(np.median(seconds)), "ms_per_frame_mean": 1000 * float(np.mean(seconds)),
        "states": len(stream.state_names), "ops": sorted(stream.op_names),
    }
    _check(metrics["stream_float32"]["max_abs_diff"] <= STREAM_TFLITE_TOLERANCE, "stream_float32", metrics, tmp_dir)
    _write_metrics(metrics, tmp_dir)
    _keep(tmp_dir, final_dir, class_names)
    return metrics, tflite_stream


class TFLiteStream:
    """A stream-form TFLite model ({"image", **states} -> {"probabilities", **states}) run with LiteRT."""

    def __init__(self, path):
        interpreter = Interpreter(model_path=path)
        self.runner = interpreter.get_signature_runner()
        self.inputs = self.runner.get_input_details()
        self.state_names = [name for name in self.inputs if name != "image"]
        self.op_names = op_names(interpreter)

    def run(self, video, seconds=None):
        """Probabilities after each step over video [1, frames, h, w, 3]: [1, steps, classes]. Appends each
        step's wall time to `seconds` if given."""
        step = self.inputs["image"]["shape"][1]
        states = {name: np.zeros([1, *self.inputs[name]["shape"][1:]], np.float32) for name in self.state_names}
        outputs = []
        for start in range(0, video.shape[1], step):
            began = time.perf_counter()
            result = self.runner(image=np.asarray(video[:, start:start + step], np.float32), **states)
            if seconds is not None:
                seconds.append(time.perf_counter() - began)
            states = {name: result[name] for name in self.state_names}
            outputs.append(result["probabilities"])
        return np.stack(outputs, axis=1)


def load_feature_classifier(run_dir, fmt="saved_model"):
    """(predict function on float feature batches, class names, export metrics) of an
    `export_feature_classifier` export. The SavedModel is a program: only load runs you trust."""
    predict, class_names = load_float_classifier(run_dir, fmt)
    metrics = _read_export_json(os.path.join(run_export_dir(run_dir), "export_metrics.json"))
    return predict, class_names, metrics


def load_float_classifier(run_dir, fmt="saved_model"):
    """(predict function on float inputs, class names) of a run's exported classifier: feature
    vectors, or one waveform. The SavedModel is a program: only load runs you trust."""
    if fmt not in ("saved_model", "tflite", "tflite-dynamic"):
        raise UserError(f"--format {fmt!r} is not an export format of this run; choose saved_model, tflite or tflite-dynamic.")
    export_dir = run_export_dir(run_dir)
    path = os.path.join(export_dir, _FORMAT_FILES[fmt])
    if not os.path.exists(path) or not os.path.isfile(os.path.join(export_dir, "labels.txt")):
        raise UserError(f"{run_dir!r} holds no exported {fmt} model ({path} or labels.txt is missing); "
                        "give the run directory that `tfcourse run` printed.")
    with open(os.path.join(export_dir, "labels.txt")) as f:
        class_names = f.read().splitlines()
    return (SavedModelClassifier(path, tf.float32) if fmt == "saved_model" else TFLiteModel(path)), class_names


class TFLiteSignature:
    """A TFLite model's serving signature run with LiteRT: image batches in, {output name: array} out."""

    def __init__(self, path):
        self.interpreter = _tflite_interpreter(path)
        name, details = next(iter(self.interpreter.get_signature_list().items()))
        self.input_name = details["inputs"][0]
        self.runner = self.interpreter.get_signature_runner(name)

    def __call__(self, images):
        return self.runner(**{self.input_name: np.asarray(images)})


def export_named_outputs(model, run_dir, test_images, class_names, score=None, batch_size=32):
    """SavedModel + float32 TFLite of a model with one image input and a dict of named outputs.

    Each format's every output must match Keras within the float tolerances on `test_images`
    before anything is kept (written to `<run>/export.tmp`, then moved to `<run>/export`).
    `score(outputs)` (optional) turns a format's {name: array} outputs into metrics recorded
    beside its differences. Returns {format: {"max_abs_diff": {output: diff}, "size_bytes", ...}}.
    """
    def outputs_of(predict):
        batches = [predict(test_images[i : i + batch_size]) for i in range(0, len(test_images), batch_size)]
        return {name: np.concatenate([np.asarray(b[name]) for b in batches]) for name in batches[0]}

    def measure(outputs, path):
        result = {"max_abs_diff": {name: float(np.max(np.abs(outputs[name] - value))) for name, value in reference.items()},
                  "size_bytes": _size(path)}
        return {**result, **(score(outputs) if score else {})}

    tmp_dir, final_dir = _fresh_export_dir(run_dir)
    reference = outputs_of(lambda x: model.predict(x, verbose=0))
    metrics = {"image_size": int(model.input.shape[1]), "outputs": sorted(reference),
               "keras": score(reference) if score else {}}
    saved_model_dir = os.path.join(tmp_dir, "saved_model")
    model.export(saved_model_dir, format="tf_saved_model", verbose=False)
    serve = tf.saved_model.load(saved_model_dir).signatures["serve"]
    metrics["saved_model"] = measure(outputs_of(lambda x: {k: v.numpy() for k, v in serve(tf.constant(x)).items()}),
                                     saved_model_dir)
    _check(max(metrics["saved_model"]["max_abs_diff"].values()) <= SAVED_MODEL_TOLERANCE, "saved_model", metrics, tmp_dir)
    path = os.path.join(tmp_dir, "model_float32.tflite")
    with open(path, "wb") as f:
        f.write(convert_tflite(saved_model_dir, "float32"))
    metrics["float32"] = measure(outputs_of(TFLiteSignature(path)), path)
    _check(max(metrics["float32"]["max_abs_diff"].values()) <= FLOAT_TFLITE_TOLERANCE, "float32", metrics, tmp_dir)
    with open(os.path.join(tmp_dir, "export_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    _keep(tmp_dir, final_dir, class_names)
    return metrics


def load_named_outputs(run_dir, fmt="saved_model"):
    """-> (predict: uint8 image batch -> {output name: array}, image size, class names) of an
    `export_named_outputs` export (saved_model or tflite). The SavedModel is a program: only load
    exports of runs you trust."""
    export_dir = run_export_dir(run_dir)
    paths = {"saved_model": os.path.join(export_dir, "saved_model"), "tflite": os.path.join(export_dir, "model_float32.tflite")}
    if fmt not in paths:
        raise UserError(f"--format {fmt!r}: this run exports saved_model and tflite (float32) only.")
    metrics_path = os.path.join(export_dir, "export_metrics.json")
    if not os.path.exists(paths[fmt]) or not os.path.isfile(metrics_path):
        raise UserError(f"{run_dir!r} holds no exported {fmt} model ({paths[fmt]} or export_metrics.json is missing).")
    image_size = _read_export_json(metrics_path)["image_size"]
    with open(os.path.join(export_dir, "labels.txt")) as f:
        class_names = f.read().splitlines()
    if fmt == "tflite":
        return TFLiteSignature(paths[fmt]), image_size, class_names
    serve = _serve_signature(load_saved_model(paths[fmt]), paths[fmt])
    return (lambda x: {k: v.numpy() for k, v in serve(tf.constant(x)).items()}), image_size, class_names


def classifier_table(export_metrics):
    """Markdown rows of `export_classifier`'s metrics: one per format, accuracy, difference from Keras, size."""
    lines = ["| format | test acc | max abs diff vs Keras | size (KB) |", "|---|---|---|---|"]
    for variant in ("saved_model", *TFLITE_VARIANTS):
        m = export_metrics[variant]
        lines.append(f"| {variant} | {m['accuracy']:.3f} | {m['max_abs_diff']:.2e} | {m['size_bytes'] / 1024:.0f} |")
    return lines


# ## Segment Anything: the image encoder and the prompt decoder, exported apart

SAM_POINTS = 4  # the TFLite decoder's `points` signature takes this many points; pad with label -1


def pad_points(points, labels):
    """Points [n, P, 2] and labels [n, P] padded to SAM_POINTS with label -1 (SAM's "no point")."""
    count = points.shape[1]
    padded_points = np.zeros((len(points), SAM_POINTS, 2), "float32")
    padded_labels = np.full((len(points), SAM_POINTS), -1.0, "float32")
    padded_points[:, :count], padded_labels[:, :count] = points, labels
    return padded_points, padded_labels


def export_sam(image_encoder, prompt_decoder, run_dir, test_images, test_boxes, test_points, score):
    """SAM as a mobile app runs it: the image encoder once per image, the prompt decoder once per prompt.

    Writes `image_encoder/` (SavedModel: uint8 images -> image embeddings), `prompt_decoder/`
    (SavedModel: `serve` takes any points, labels, boxes and mask prompts; `box` and `points` take
    one prompt) and `prompt_decoder.tflite` (the `box` and `points` signatures, builtin ops only).
    Every format is checked against Keras on the test images, with each image's box [x0, y0, x1, y1]
    and one object point (x, y) as prompts, before anything is kept. `score(box mask logits)` turns a
    format's box-prompt masks into metrics. Returns the metrics per format.
    """
    tmp_dir, final_dir = _fresh_export_dir(run_dir)
    boxes = np.asarray(test_boxes, "float32").reshape(-1, 1, 2, 2)
    points, labels = pad_points(np.asarray(test_points, "float32")[:, None], np.ones((len(test_points), 1), "float32"))
    embedding_shape = tuple(prompt_decoder.input["image_embeddings"].shape[1:])
    mask_side = prompt_decoder.input["masks"].shape[2]

    def decode(image_embeddings, **prompts):
        return prompt_decoder({"image_embeddings": image_embeddings, **no_prompts(1, mask_side), **prompts})

    def box(image_embeddings, boxes):
        return decode(image_embeddings, boxes=boxes)

    def point_prompts(image_embeddings, points, labels):
        return decode(image_embeddings, points=points, labels=labels)

    one_prompt = {
        "box": (box, [tf.TensorSpec((1, *embedding_shape), name="image_embeddings"),
                      tf.TensorSpec((1, 1, 2, 2), name="boxes")]),
        "points": (point_prompts, [tf.TensorSpec((1, *embedding_shape), name="image_embeddings"),
                                   tf.TensorSpec((1, SAM_POINTS, 2), name="points"),
                                   tf.TensorSpec((1, SAM_POINTS), name="labels")]),
    }
    def write_decoder(path, endpoints):
        archive = keras.export.ExportArchive()
        archive.track(prompt_decoder)
        for name, (function, signature) in endpoints.items():
            archive.add_endpoint(name, function, input_signature=signature)
        archive.write_out(path, verbose=False)

    encoder_dir, decoder_dir = os.path.join(tmp_dir, "image_encoder"), os.path.join(tmp_dir, "prompt_decoder")
    image_encoder.export(encoder_dir, format="tf_saved_model", verbose=False)
    any_prompts = [{name: tf.TensorSpec((None, *spec.shape[1:]), name=name) for name, spec in prompt_decoder.input.items()}]
    write_decoder(decoder_dir, {"serve": (prompt_decoder.call, any_prompts), **one_prompt})
    # The converter fails on `serve` (a strided slice over prompts of unknown count needs TF ops), so
    # the TFLite model comes from the one-prompt signatures alone.
    tflite_source = os.path.join(tmp_dir, "prompt_decoder_one_prompt")
    write_decoder(tflite_source, one_prompt)
    tflite_path = os.path.join(tmp_dir, "prompt_decoder.tflite")
    converter = tf.lite.TFLiteConverter.from_saved_model(tflite_source, signature_keys=list(one_prompt))
    with open(tflite_path, "wb") as f:
        f.write(converter.convert())
    shutil.rmtree(tflite_source)

    embeddings = image_encoder.predict(test_images, verbose=0)
    reference = {"box": [], "points": []}
    for i in range(len(test_images)):
        reference["box"].append(box(tf.constant(embeddings[i : i + 1]), tf.constant(boxes[i : i + 1])))
        reference["points"].append(point_prompts(tf.constant(embeddings[i : i + 1]), tf.constant(points[i : i + 1]),
                                                 tf.constant(labels[i : i + 1])))
    metrics = {"image_size": int(image_encoder.input.shape[1]), "points_per_prompt": SAM_POINTS,
               "keras": score(np.concatenate([np.asarray(r["masks"]) for r in reference["box"]]))}

    def compare(outputs, path):
        """Max abs difference from Keras per prompt kind and output, and the box-prompt scores."""
        diffs = {f"{kind}_{name}": float(max(np.max(np.abs(np.asarray(o[name]) - np.asarray(r[name])))
                                            for o, r in zip(outputs[kind], reference[kind])))
                 for kind in outputs for name in ("masks", "iou_pred")}
        box_masks = np.concatenate([np.asarray(o["masks"]) for o in outputs["box"]])
        return {"max_abs_diff": diffs, "size_bytes": _size(path), **score(box_masks)}

    loaded_encoder = load_saved_model(encoder_dir)
    saved_embeddings = np.concatenate([loaded_encoder.serve(tf.constant(test_images[i : i + 32])).numpy()
                                       for i in range(0, len(test_images), 32)])
    metrics["image_encoder"] = {"max_abs_diff": float(np.max(np.abs(saved_embeddings - embeddings))),
                                "size_bytes": _size(encoder_dir)}
    _check(metrics["image_encoder"]["max_abs_diff"] <= SAVED_MODEL_TOLERANCE, "image_encoder", metrics, tmp_dir)
    loaded_decoder = load_saved_model(decoder_dir)
    outputs = {"box": [], "points": []}
    for i in range(len(test_images)):
        prompts = {"image_embeddings": tf.constant(saved_embeddings[i : i + 1]), "points": tf.constant(points[i : i + 1]),
                   "labels": tf.constant(labels[i : i + 1]), "boxes": tf.constant(boxes[i : i + 1]),
                   "masks": tf.zeros((1, 0, mask_side, mask_side, 1))}
        outputs["box"].append(loaded_decoder.serve({**prompts, "points": tf.zeros((1, 0, 2)), "labels": tf.zeros((1, 0))}))
        outputs["points"].append(loaded_decoder.serve({**prompts, "boxes": tf.zeros((1, 0, 2, 2))}))
    metrics["prompt_decoder"] = compare(outputs, decoder_dir)
    _check(max(metrics["prompt_decoder"]["max_abs_diff"].values()) <= SAVED_MODEL_TOLERANCE, "prompt_decoder",
           metrics, tmp_dir)
    interpreter = _tflite_interpreter(tflite_path)
    runners = {kind: interpreter.get_signature_runner(kind) for kind in one_prompt}
    outputs = {
        "box": [runners["box"](image_embeddings=embeddings[i : i + 1], boxes=boxes[i : i + 1])
                for i in range(len(test_images))],
        "points": [runners["points"](image_embeddings=embeddings[i : i + 1], points=points[i : i + 1],
                                     labels=labels[i : i + 1]) for i in range(len(test_images))],
    }
    metrics["prompt_decoder_tflite"] = {**compare(outputs, tflite_path), "ops": sorted(op_names(open_interpreter(tflite_path)))}
    _check(max(metrics["prompt_decoder_tflite"]["max_abs_diff"].values()) <= FLOAT_TFLITE_TOLERANCE,
           "prompt_decoder_tflite", metrics, tmp_dir)
    _write_metrics(metrics, tmp_dir)
    _replace_dir(tmp_dir, final_dir)
    return metrics


class SAMExport:
    """A run's exported SAM: `encode` (uint8 [1, S, S, 3] -> image embeddings, the SavedModel) and
    `decode` (one box [1, 1, 2, 2] or up to SAM_POINTS points [1, P, 2] with labels [1, P], in the
    pixels of S x S images -> {"masks": [1, 4, S/4, S/4] logits, "iou_pred": [1, 4]}), from the
    SavedModel or the TFLite decoder. There is no TFLite image encoder: `tflite` decodes with TFLite
    and encodes with the SavedModel. The SavedModels are programs: only load runs you trust."""

    def __init__(self, run_dir, fmt="saved_model"):
        if fmt not in ("saved_model", "tflite"):
            raise UserError(f"--format {fmt!r}: a segment-anything run exports saved_model and tflite (the decoder) only.")
        export_dir = run_export_dir(run_dir)
        paths = {"image_encoder": os.path.join(export_dir, "image_encoder"),
                 "decoder": os.path.join(export_dir, "prompt_decoder" if fmt == "saved_model" else "prompt_decoder.tflite")}
        for path in (*paths.values(), os.path.join(export_dir, "export_metrics.json")):
            if not os.path.exists(path):
                raise UserError(f"{run_dir!r} holds no exported SAM ({path} is missing); give the run directory "
                                "of a segment-anything run that `tfcourse run` printed.")
        self.image_size = _read_export_json(os.path.join(export_dir, "export_metrics.json"))["image_size"]
        self._encoder = load_saved_model(paths["image_encoder"])  # kept: its variables live as long as it does
        if fmt == "saved_model":
            self._decoder = load_saved_model(paths["decoder"])
            if not all(hasattr(self._decoder, kind) for kind in ("box", "points")):
                raise UserError(f"SavedModel {paths['decoder']!r} has no `box` and `points` functions: it is not a "
                                "tfcourse SAM export.")
            self._signatures = {"box": self._decoder.box, "points": self._decoder.points}
        else:
            interpreter = _tflite_interpreter(paths["decoder"])
            self._signatures = {kind: interpreter.get_signature_runner(kind) for kind in ("box", "points")}

    def encode(self, image):
        return self._encoder.serve(tf.constant(image, tf.uint8)).numpy()

    def decode(self, embedding, boxes=None, points=None, labels=None):
        if boxes is not None:
            prompts, kind = {"boxes": np.asarray(boxes, "float32").reshape(1, 1, 2, 2)}, "box"
        else:
            count = len(points)
            if not 1 <= count <= SAM_POINTS:
                raise UserError(f"{count} points given: the exported decoder takes 1 to {SAM_POINTS} points.")
            padded_points, padded_labels = pad_points(np.asarray(points, "float32")[None], np.asarray(labels, "float32")[None])
            prompts, kind = {"points": padded_points, "labels": padded_labels}, "points"
        outputs = self._signatures[kind](image_embeddings=np.asarray(embedding, "float32"), **prompts)
        return {name: np.asarray(outputs[name]) for name in ("masks", "iou_pred")}


def export_causal_lm(causal_lm, run_dir, chats):
    """A causal LM's next-token logits as a SavedModel and a float32 TFLite model, with the
    tokenizer's SentencePiece model beside them; checked against Keras on `chats`, then kept.

    Each takes token_ids and padding_mask, int32 [1, sequence_length] (the chat left-aligned,
    as the preprocessor pads it), and gives logits [1, sequence_length, vocabulary]: greedy decoding
    runs it again on the longer prefix for each new token (no cache in the export)."""
    preprocessor, length = causal_lm.preprocessor, causal_lm.preprocessor.sequence_length
    spec = [tf.TensorSpec([1, length], tf.int32, name="token_ids"), tf.TensorSpec([1, length], tf.int32, name="padding_mask")]

    def logits(token_ids, padding_mask):
        return causal_lm({"token_ids": tf.convert_to_tensor(token_ids), "padding_mask": tf.cast(padding_mask, "bool")})

    inputs = [preprocessor.generate_preprocess([chat], sequence_length=length) for chat in chats]
    inputs = [(np.asarray(x["token_ids"], np.int32), np.asarray(x["padding_mask"], np.int32)) for x in inputs]
    reference = [np.asarray(logits(*x)) for x in inputs]
    tmp_dir, final_dir = _fresh_export_dir(run_dir)
    archive = keras.export.ExportArchive()
    archive.track(causal_lm)
    archive.add_endpoint("serve", logits, input_signature=spec)
    saved_model_dir = os.path.join(tmp_dir, "saved_model")
    archive.write_out(saved_model_dir, verbose=False)
    loaded = tf.saved_model.load(saved_model_dir)
    metrics = {"sequence_length": length, "chats": len(chats),
               "saved_model": _logits_metrics([loaded.serve(*x).numpy() for x in inputs], reference, inputs, saved_model_dir)}
    _check(metrics["saved_model"]["max_abs_diff"] <= SAVED_MODEL_TOLERANCE, "saved_model", metrics, tmp_dir)
    path = os.path.join(tmp_dir, _FORMAT_FILES["tflite"])
    with open(path, "wb") as f:
        f.write(convert_tflite(saved_model_dir, "float32"))
    interpreter = _tflite_interpreter(path)
    runner = interpreter.get_signature_runner(next(iter(interpreter.get_signature_list())))
    output = [next(iter(runner(token_ids=ids, padding_mask=mask).values())) for ids, mask in inputs]
    metrics["float32"] = _logits_metrics(output, reference, inputs, path)
    _check(metrics["float32"]["max_abs_diff"] <= FLOAT_TFLITE_TOLERANCE, "float32", metrics, tmp_dir)
    with open(os.path.join(tmp_dir, "tokenizer.model"), "wb") as f:
        f.write(preprocessor.tokenizer.proto)
    _write_metrics(metrics, tmp_dir)
    _replace_dir(tmp_dir, final_dir)
    return metrics


def _logits_metrics(logits, reference, inputs, path):
    """Over the chats' real tokens: the largest logit difference, and how often the greedy next token agrees."""
    real = [mask[0].astype(bool) for _, mask in inputs]
    ours = np.concatenate([l[0][r] for l, r in zip(logits, real)])
    theirs = np.concatenate([l[0][r] for l, r in zip(reference, real)])
    return {"max_abs_diff": float(np.abs(ours - theirs).max()),
            "next_token_agreement": float(np.mean(ours.argmax(-1) == theirs.argmax(-1))), "size_bytes": _size(path)}
