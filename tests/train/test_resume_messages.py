"""Runs that move and reuse: a resume mismatch names each changed setting
with its recorded and new value in one message; a flag the task ignores is
refused; flag-combination errors of train.py are one line."""

import dataclasses
import io
import pathlib

import pytest

from lstm_ctl import config as config_lib
from lstm_ctl.train import trainer
from helpers import run_main
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_resume_mismatch_names_each_changed_setting(tmp_path):
    config = TrainConfig(model_dir=str(tmp_path / "run"),
                         model=ModelConfig(units=8),
                         data=DataConfig(seq_len=5, batch_size=2),
                         train_steps=1, checkpoint_every=1, eval_every=0)
    trainer.train(config, out=io.StringIO())
    other = dataclasses.replace(
        config, model=ModelConfig(units=16),
        data=DataConfig(seq_len=5, batch_size=4, seed=3),
        train_steps=5, eval_every=2)          # these two may change
    with pytest.raises(ValueError) as e:
        trainer.Trainer(other, out=io.StringIO())
    message = str(e.value)
    assert ("other settings: model.units: 8 -> 16; data.batch_size: 2 -> 4; "
            "data.seed: 0 -> 3 (recorded -> now)") in message, message
    assert "\n" not in message and "{" not in message


def test_changed_settings_walks_nested_dicts():
    old = {"data": {"a": 1, "b": [1, 2]}, "seed": 0, "units": 3}
    new = {"data": {"a": 1, "b": [1, 3]}, "seed": 0, "units": 4}
    assert config_lib.changed_settings(old, new, ("data", "seed")) == [
        "data.b: [1, 2] -> [1, 3]"]


@pytest.mark.parametrize("data, message", [
    (DataConfig(task="csv", csv_file="d.csv", target_columns=("a",),
                text_file="t.txt"), "text_file is for --task=text"),
    (DataConfig(task="text", text_file="t.txt", csv_file="d.csv"),
     "csv_file is for --task=csv"),
    (DataConfig(task="sine", target_columns=("a",)),
     "target_columns is for --task=csv"),
])
def test_a_flag_the_task_ignores_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        config_lib.validate(TrainConfig(data=data))


def test_config_json_records_absolute_data_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data=DataConfig(task="text", text_file="books/*.txt"))
    assert config_lib.with_absolute_paths(config).data.text_file == str(
        tmp_path / "books" / "*.txt")


def test_train_py_flag_combination_error_is_one_line(tmp_path):
    result = run_main("train.py", "--task=csv",
                      f"--csv_file={tmp_path / 'd.csv'}", "--target_columns=a",
                      f"--text_file={tmp_path / 't.txt'}",
                      f"--model_dir={tmp_path / 'never'}")
    assert result.returncode == 1
    assert result.stderr.startswith("train.py: error: --text_file is for "
                                    "--task=text"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "never").exists()
