"""The project's Keras 3 MoViNet-A0 against TF Model Garden's own, on a checkpoint Model Garden wrote.

    PYTHONPATH=. python benchmarks/movinet_model_garden_parity.py CHECKPOINT_DIR REFERENCE_NPZ [--causal]

The reference comes from Model Garden's code (tf-models-official 2.20.0 with --no-deps in a side
environment, on TF 2.21 and tf-keras): `Movinet(model_id="a0", causal=..., conv_type="3d",
se_type="3d")` in a `MovinetClassifier` with 6 classes and seeded random weights (nonzero ReZero
scales, batch norm statistics away from 0 and 1), saved with `tf.train.Checkpoint(model=model)`,
plus an .npz of its input clip, every block's output ("stem", "blockX_layerY", "head") and its
logits. tf-models-official pins TF 2.20, so it cannot be a dependency of the project; this script
needs only the checkpoint and the .npz.

Loads the checkpoint with `movinet.load_model_garden_checkpoint`, runs the same clip, and prints the
largest difference per block relative to the block's largest value, and for the logits (the
classifier head applied from the checkpoint's own head weights). Exits 1 above 1e-4 relative.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfcourse.models import movinet  # noqa: E402

TOLERANCE = 1e-4


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("reference")
    parser.add_argument("--causal", action="store_true")
    args = parser.parse_args()
    reference = np.load(args.reference)
    clip = reference["input"]
    backbone = movinet.movinet_backbone("a0", causal=args.causal, size=clip.shape[2])
    loaded = movinet.load_model_garden_checkpoint(backbone, args.checkpoint)
    block_names = ["stem"] + [layer.name.removesuffix("_rezero") for layer in backbone.layers if layer.name.endswith("_rezero")]
    outputs = {name: backbone.get_layer("stem_act" if name == "stem" else f"{name}_add").output for name in block_names}
    outputs["head"] = backbone.output
    ours = keras.Model(backbone.input, outputs)(clip)
    worst = 0.0
    print(f"{loaded} tensors loaded from {args.checkpoint}; clip {clip.shape}, causal={args.causal}")
    for name, value in ours.items():
        expected = reference[name].reshape(np.shape(value))
        relative = float(np.abs(np.asarray(value) - expected).max() / np.abs(expected).max())
        worst = max(worst, relative)
        print(f"{name:15s} max |diff| / max |value| = {relative:.2e}")
    reader = tf.train.load_checkpoint(movinet.model_garden_checkpoint_path(args.checkpoint))
    head = "model/layer_with_weights-1/_{}/_conv/{}/.ATTRIBUTES/VARIABLE_VALUE"
    hidden = tf.nn.swish(ours["head"] @ reader.get_tensor(head.format("head", "kernel"))[0, 0, 0]
                         + reader.get_tensor(head.format("head", "bias")))
    logits = hidden @ reader.get_tensor(head.format("classifier", "kernel"))[0, 0, 0] + reader.get_tensor(
        head.format("classifier", "bias"))
    relative = float(np.abs(logits - reference["logits"]).max() / np.abs(reference["logits"]).max())
    worst = max(worst, relative)
    print(f"{'logits':15s} max |diff| / max |value| = {relative:.2e}  (ours {np.round(logits[0], 3)})")
    print(f"worst: {worst:.2e} (tolerance {TOLERANCE})")
    raise SystemExit(0 if worst <= TOLERANCE else 1)


if __name__ == "__main__":
    main()
