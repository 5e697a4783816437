"""Largest difference between tfcourse.metrics and the reference implementations, on seeded random inputs.

    PYTHONPATH=. python benchmarks/metrics_parity.py [--seeds N]

Runs every check of tests/metrics/parity.py (scikit-learn, pycocotools, scikit-image, NLTK and SciPy;
a NumPy transcription of the published code where no package exists) on seeds 0..N-1 and prints one
line per check: its name and the largest absolute difference seen. Exits 1 if any exceeds 1e-6.
"""

import argparse
import importlib.metadata
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.metrics import parity  # noqa: E402

REFERENCE_PACKAGES = ("scikit-learn", "pycocotools", "scikit-image", "nltk", "scipy", "numpy", "tensorflow", "keras")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="random inputs per check (default 20)")
    args = parser.parse_args(argv)
    print("versions: " + ", ".join(f"{name} {importlib.metadata.version(name)}" for name in REFERENCE_PACKAGES))
    print(f"{'check':<80} max |ours - reference| over {args.seeds} seeds")
    start, worst, count = time.perf_counter(), 0.0, 0
    for module, checks in parity.CHECKS.items():
        for name in checks:
            difference = max(parity.run(module, name, seed) for seed in range(args.seeds))
            worst, count = max(worst, difference), count + 1
            print(f"{module + ': ' + name:<80} {difference:.3g}")
    print(f"{count} checks in {time.perf_counter() - start:.1f} s; largest difference {worst:.3g} "
          f"(tolerance {parity.TOLERANCE:g})")
    return 0 if worst <= parity.TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
