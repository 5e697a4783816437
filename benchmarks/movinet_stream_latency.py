"""Per-frame latency of the MoViNet-A0 stream TFLite model (float32, builtin ops) on this CPU.

    PYTHONPATH=. python benchmarks/movinet_stream_latency.py [--size 172] [--frames 50]

Builds the causal A0 classifier (600 classes, Kinetics-600's head, random weights: latency does not
depend on them), converts its stream form, runs `frames` frames one at a time through LiteRT
(default XNNPACK delegate) after 5 warm-up frames, and prints the median and mean milliseconds per
frame, the op set, the model size and the stream-vs-clip difference after the last frame.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfcourse.export import TFLiteStream, convert_tflite  # noqa: E402
from tfcourse.models import movinet  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=movinet.INPUT_SIZE)
    parser.add_argument("--frames", type=int, default=50)
    args = parser.parse_args()
    model = movinet.movinet_classifier(movinet.movinet_backbone("a0", causal=True, size=args.size), 600, 2048)
    stream = movinet.stream_classifier(model, "a0", args.size)
    video = np.random.default_rng(0).uniform(0, 1, (1, args.frames + 5, args.size, args.size, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        stream.export(os.path.join(tmp, "stream"), verbose=False)
        path = os.path.join(tmp, "stream.tflite")
        with open(path, "wb") as f:
            f.write(convert_tflite(os.path.join(tmp, "stream"), "float32"))
        runner = TFLiteStream(path)
        seconds = []
        per_frame = runner.run(video, seconds)
        size_mb = os.path.getsize(path) / 1e6
    seconds = np.array(seconds[5:]) * 1000
    difference = np.abs(per_frame[:, -1] - model.predict_on_batch(video)).max()
    print(f"MoViNet-A0 stream TFLite at {args.size} px, {args.frames} frames (after 5 warm-up), {os.cpu_count()} CPUs")
    print(f"ms per frame: median {np.median(seconds):.2f}, mean {seconds.mean():.2f}, p90 {np.percentile(seconds, 90):.2f}")
    print(f"{len(runner.state_names)} state tensors, {size_mb:.2f} MB, ops: {', '.join(sorted(runner.op_names))}")
    print(f"last frame vs whole clip (Keras): max abs diff {difference:.2e}")


if __name__ == "__main__":
    main()
