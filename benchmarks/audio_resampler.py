"""Accuracy and speed of tfcourse.data.audio.resample against analytic sines.

    PYTHONPATH=. python benchmarks/audio_resampler.py [--seconds S] [--rates 8000 22050 ...]

For each input rate and sine frequency: a sine sampled at the input rate (float32) is resampled to
16 kHz and compared with the same sine evaluated at the output sample times, leaving out the
`edge_samples` outputs at each end that reach into the zero padding. Prints the largest absolute
error and the time per second of audio (a tf.function, as tf.data runs it; best of 5 runs).
Exits 1 if any error exceeds 1e-4.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfcourse.data import audio  # noqa: E402

TARGET_RATE = 16000
FREQUENCIES = (440, 3000)
TOLERANCE = 1e-4
RUNS = 5


def sine(frequency, rate, num_samples):
    return np.sin(2 * np.pi * frequency * np.arange(num_samples) / rate)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each test sine (default 10)")
    parser.add_argument("--rates", type=int, nargs="+", default=[8000, 22050, 44100, 48000])
    args = parser.parse_args(argv)
    signature = [tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int64)]
    resample = tf.function(audio.resample, input_signature=signature)
    print(f"tensorflow {tf.__version__}; {args.seconds:g} s sines to {TARGET_RATE} Hz; "
          f"zero crossings {audio.ZERO_CROSSINGS}, rolloff {audio.ROLLOFF}, Kaiser beta {audio.KAISER_BETA}")
    print(f"{'from Hz':>8} {'sine Hz':>8} {'edge':>5} {'max |error|':>12} {'ms per s of audio':>18}")
    worst = 0.0
    for from_rate in args.rates:
        for frequency in FREQUENCIES:
            waveform = tf.constant(sine(frequency, from_rate, int(args.seconds * from_rate)), tf.float32)
            output = resample(waveform, from_rate).numpy()
            edge = audio.edge_samples(from_rate, TARGET_RATE)
            error = np.abs(output - sine(frequency, TARGET_RATE, len(output)))[edge:-edge].max()
            times = []
            for _ in range(RUNS):
                start = time.perf_counter()
                resample(waveform, from_rate).numpy()
                times.append(time.perf_counter() - start)
            worst = max(worst, error)
            print(f"{from_rate:>8} {frequency:>8} {edge:>5} {error:>12.3g} {1000 * min(times) / args.seconds:>18.2f}")
    print(f"largest error {worst:.3g} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
