import pytest

from tfcourse import UserError, runs


def test_an_unfinished_run_resumes_with_the_same_config_even_with_tuples(tmp_path):
    config = {"sample": {"strengths": (0.0, 0.5, 1.0)}, "train": {"epochs": 3}}
    checkpoints = runs.prepare_run_dir(str(tmp_path), config)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "kept").write_text("epoch 1")
    assert runs.prepare_run_dir(str(tmp_path), config) == checkpoints  # config.yaml holds a list: still the same
    assert (tmp_path / "checkpoints" / "kept").read_text() == "epoch 1"
    with pytest.raises(UserError, match="different config"):
        runs.prepare_run_dir(str(tmp_path), {**config, "train": {"epochs": 4}})
