import json
import os

import pytest

from tfcourse import cli
from tfcourse.data import images
from tfcourse.lessons import LESSONS


def test_list_names_every_lesson(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(LESSONS)  # every lesson, by name
    assert "fine-tuned" in next(line for line in lines if line.startswith("crop-disease"))


@pytest.mark.parametrize(
    "argv, words",
    [
        (["run", "no-such-lesson"], ["invalid choice", "crop-disease"]),
        (["run", "crop-disease", "--set", "train.epochz=1"], ["train.epochz", "feature_epochs"]),
        (["run", "crop-disease", "--set", "data.batch_size=big"], ["data.batch_size", "expected int"]),
        (["run", "crop-disease", "--config", "missing.yaml"], ["missing.yaml", "does not exist"]),
        (["run", "crop-disease", "--set", "data.source=/no/such/folder"], ["/no/such/folder", "not a folder"]),
        (["run", "fundamentals", "--set", "regression_steps=0"], ["regression_steps", "must be positive"]),
        (["evaluate", "/no/run", "--data", "/no/data"], ["/no/run", "no exported"]),
        (["evaluate", "/no/run", "--data", "x", "--format", "onnx"], ["'onnx'", "tflite-int8"]),
    ],
)
def test_bad_input_exits_2_with_a_message_not_a_traceback(argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) if "invalid choice" in words else _returns(2) as outcome:
        code = cli.main(argv + (["--out", str(tmp_path / "run")] if argv[0] == "run" else []))
        outcome.code = code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in words:
        assert word in err


class _returns:
    def __init__(self, expected):
        self.expected, self.code = expected, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        assert self.code == self.expected
        return False


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "smoke")
    assert cli.main(["run", "crop-disease", "--smoke", "--out", run_dir]) == 0
    return run_dir


def test_smoke_run_writes_the_full_run_directory(smoke_run, capsys):
    for name in ("report.json", "summary.md", "training_curves.png", "confusion_matrix.png", "config.yaml",
                 "export/saved_model/saved_model.pb", "export/model_float32.tflite", "export/model_dynamic_range.tflite",
                 "export/model_int8.tflite", "export/labels.txt"):
        assert os.path.exists(os.path.join(smoke_run, name)), name
    report = json.load(open(os.path.join(smoke_run, "report.json")))
    assert report["backbone"]["pretrained"] is False and "randomly initialised" in report["note"]
    assert set(report["metrics"]) == {"frozen", "fine_tuned", "scratch"}
    for results in report["metrics"].values():
        assert set(results) == {"train", "validation", "test"}
        assert sum(map(sum, results["test"]["confusion_matrix"])) == 24
    assert report["data"]["num_skipped"] == 0 and report["data"]["per_split_per_class"]["test"]["circle"] == 8
    assert report["export"]["float32"]["max_abs_diff"] <= 1e-4
    assert set(report["timings_seconds"]) >= {"data", "train_frozen", "export"}


def test_evaluate_prints_metrics_json(smoke_run, capsys, tmp_path):
    other = images.write_synthetic_image_folder(str(tmp_path / "other"), per_class=5, image_size=64, seed=123)
    for fmt in ("saved_model", "tflite-int8"):
        assert cli.main(["evaluate", smoke_run, "--data", other, "--format", fmt]) == 0
        result = json.loads(capsys.readouterr().out)
        assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(result)
        assert sum(map(sum, result["confusion_matrix"])) == 15 and 0 <= result["accuracy"] <= 1


def test_evaluate_refuses_unknown_classes(smoke_run, capsys, tmp_path):
    other = images.write_synthetic_image_folder(str(tmp_path / "other"), ("circle", "hexagon"), per_class=2)
    assert cli.main(["evaluate", smoke_run, "--data", other]) == 2
    assert "hexagon" in capsys.readouterr().err


def test_predict_prints_top_k_per_file(smoke_run, capsys, tmp_path):
    folder = images.write_synthetic_image_folder(str(tmp_path / "p"), per_class=1, image_size=64)
    files = [os.path.join(folder, "circle", "circle_000.png"), os.path.join(folder, "square", "square_000.png")]
    assert cli.main(["predict", smoke_run, *files, "--top-k", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in result] == files
    for r in result:
        assert len(r["top_k"]) == 2 and r["top_k"][0]["probability"] >= r["top_k"][1]["probability"]
        assert {t["class"] for t in r["top_k"]} <= {"circle", "square", "stripes"}
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    assert cli.main(["predict", smoke_run, str(bad)]) == 2
    assert "cannot be decoded" in capsys.readouterr().err
