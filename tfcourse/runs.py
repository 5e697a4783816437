"""Run directories: the resolved config, resumable checkpoints, report.json and summary.md.

A run directory is `saved_models/<lesson>` unless `--out` names another. Rerunning the same
command in the same directory resumes an interrupted run; a finished run is started afresh.
"""

import contextlib
import json
import os
import shutil
import time

import yaml

from tfcourse import UserError

CHECKPOINTS = "checkpoints"


def prepare_run_dir(run_dir, config_dict):
    """Creates `run_dir`; refuses to mix an unfinished run with a different config."""
    config_dict = json.loads(json.dumps(config_dict))  # tuples as lists, as config.yaml reads back
    config_path = os.path.join(run_dir, "config.yaml")
    finished = os.path.isfile(os.path.join(run_dir, "report.json"))
    if os.path.isfile(config_path):
        with open(config_path) as f:
            previous = yaml.safe_load(f)
        if previous != config_dict and not finished:
            raise UserError(
                f"{run_dir!r} holds an unfinished run with a different config. Rerun it with its own "
                f"config ({config_path}) to resume it, or pass --out with a new directory."
            )
        if previous != config_dict or finished:
            shutil.rmtree(os.path.join(run_dir, CHECKPOINTS), ignore_errors=True)
            for name in ("report.json", "summary.md"):
                if os.path.exists(os.path.join(run_dir, name)):
                    os.remove(os.path.join(run_dir, name))
    os.makedirs(run_dir, exist_ok=True)
    with open(config_path, "w") as f:
        yaml.safe_dump(config_dict, f, sort_keys=False)
    return os.path.join(run_dir, CHECKPOINTS)


def lesson_of(run_dir):
    """The name of the lesson whose finished run `run_dir` is (from its report.json), or None."""
    try:
        with open(os.path.join(run_dir, "report.json")) as f:
            return json.load(f).get("lesson")
    except (OSError, ValueError, AttributeError):
        return None


def write_report(run_dir, report, summary_markdown):
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write(summary_markdown)
    tmp = os.path.join(run_dir, "report.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, os.path.join(run_dir, "report.json"))  # written last: it marks the run finished


class Timings(dict):
    """Seconds per named step: `with timings("train"): ...`."""

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        yield
        self[name] = round(time.perf_counter() - start, 2)


def export_table(export_metrics):
    """Markdown rows of per-format export metrics (accuracy, difference from Keras, audio speed where measured)."""
    lines = ["| export | test acc | max abs diff vs Keras | audio s per CPU s |", "|---|---|---|---|"]
    for name, r in export_metrics.items():
        speed = r.get("audio_seconds_per_cpu_second")
        lines.append(f"| {name} | {r['accuracy']:.3f} | {r['max_abs_diff']:.1e} | {'' if speed is None else f'{speed:.0f}'} |")
    return lines
