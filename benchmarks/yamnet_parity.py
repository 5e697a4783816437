"""YAMNet in Keras vs the YAMNet TFLite file, on the real ESC-50 clips in the assets.

    TFCOURSE_ASSETS=../shared/assets python benchmarks/yamnet_parity.py

Prints, over all clips: the worst relative error of each imported layer fed the TFLite model's
own input (raw, and with the input quantized as TFLite's int8 hybrid kernels quantize it); the
per-patch top-1 agreement; the cosine between the clip embeddings (mean over patches); the front
end against tf.signal.stft. The file quantizes activations on the fly, so equality is not expected.
"""

import glob
import json
import os
import time

import numpy as np
import tensorflow as tf

from tfcourse.models import yamnet
from tfcourse.models.tflite_import import open_interpreter


def tflite_patches(interpreter, waveform):
    """The TFLite model on each 0.975 s window the Keras model makes a patch of: (scores, embeddings)."""
    padded = yamnet.pad_waveform(tf.constant(waveform)).numpy()
    embedding_index = next(op["outputs"][0] for op in interpreter._get_ops_details() if op["op_name"] == "MEAN")
    scores_index = next(o["index"] for o in interpreter.get_output_details() if o["shape"][-1] == yamnet.NUM_CLASSES)
    scores, embeddings = [], []
    for start in range(0, len(padded) - yamnet.PATCH_SAMPLES + 1, yamnet.PATCH_HOP_SAMPLES):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], padded[None, start : start + yamnet.PATCH_SAMPLES])
        interpreter.invoke()
        scores.append(interpreter.get_tensor(scores_index)[0])
        embeddings.append(interpreter.get_tensor(embedding_index)[0])
    return np.array(scores), np.array(embeddings)


def main():
    assets = os.environ["TFCOURSE_ASSETS"]
    interpreter = open_interpreter(os.path.join(assets, "models", "yamnet", "yamnet.tflite"), keep_intermediates=True)
    model = yamnet.YAMNet()
    model.build()
    yamnet.load_tflite_weights(model.network, interpreter)
    clips = sorted(glob.glob(os.path.join(assets, "data", "esc50_16k", "audio", "*.wav")))
    worst_raw, worst_emulated, agreement, cosines, front_end = {}, {}, [], [], []
    start = time.perf_counter()
    for path in clips:
        waveform = tf.audio.decode_wav(tf.io.read_file(path)).audio[:, 0].numpy()
        for worst, emulate in ((worst_raw, False), (worst_emulated, True)):
            for name, error in yamnet.tflite_layer_errors(model.network, interpreter, waveform[: yamnet.PATCH_SAMPLES], emulate).items():
                worst[name] = max(worst.get(name, 0.0), error)
        scores, embeddings, log_mel = (np.asarray(t) for t in model(waveform))
        tflite_scores, tflite_embeddings = tflite_patches(interpreter, waveform)
        agreement += list(scores.argmax(-1) == tflite_scores.argmax(-1))
        a, b = embeddings.mean(0), tflite_embeddings.mean(0)
        cosines.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
        padded = yamnet.pad_waveform(tf.constant(waveform))
        stft = tf.math.log(tf.abs(tf.signal.stft(padded, 400, 160, 512)) @ tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125, 7500) + 0.001)
        front_end.append(float(np.abs(log_mel - stft.numpy()).max()))
    raw_worst_layer = max(worst_raw, key=worst_raw.get)
    print(json.dumps({
        "clips": len(clips),
        "patches": len(agreement),
        "worst_layer_relative_error_raw": {"layer": raw_worst_layer, "error": worst_raw[raw_worst_layer]},
        "layers_over_3_percent_raw": {k: round(v, 4) for k, v in worst_raw.items() if v > 0.03},
        "worst_layer_relative_error_hybrid_inputs_emulated": max(worst_emulated.values()),
        "per_patch_top1_agreement": float(np.mean(agreement)),
        "clip_embedding_cosine": {"mean": float(np.mean(cosines)), "min": float(np.min(cosines))},
        "front_end_vs_tf_signal_stft_max_abs_log_mel": max(front_end),
        "seconds": round(time.perf_counter() - start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
