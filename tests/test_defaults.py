"""Settings chosen from the data (lstm_ctl/config/defaults.py): what a
100-row series, a panel of many entities and long data get, that a flag
overrides a choice, that a resumed run keeps what it recorded, and what
train.py says and records. No training beyond a few steps."""

import dataclasses
import json

import numpy as np

from lstm_ctl import config as config_lib
from lstm_ctl.config import defaults
from lstm_ctl.config.train import DataConfig, ModelConfig, TrainConfig
from tests.helpers import run_main


def _left(**changes):
    """A csv TrainConfig with every choosable setting left to the data (as
    train.py's flags leave them when not given), then `changes`."""
    config = defaults._set(TrainConfig(data=DataConfig(
        task="csv", csv_file="d.csv", target_columns=("y",))),
        {name: None for name in defaults.FIXED})
    return defaults._set(config, changes) if changes else config


def test_a_100_row_series_trains_on_windows_validated_on_its_history():
    config, chosen = defaults.choose(_left(), [90])   # 100 rows, 10 held out
    assert chosen["state_mode"] == config.state_mode == "windows"
    assert config.validate_on == "history"  # the hold-out stays unseen
    # 81 rows train (the history's last 9 validate): 80 pairs, windows of
    # 24 from any start: 57 windows, 100 passes in batches of 32.
    assert (config.data.seq_len, config.data.batch_size) == (24, 32)
    assert config.train_steps == max(defaults.MIN_STEPS, 100 * 57 // 32)
    assert config.model.units == defaults.WINDOW_UNITS
    assert (config.learning_rate, config.lr_schedule) == (1e-3, "constant")
    assert config.eval_every == 10 and config.early_stopping == 0
    assert config.ensemble == defaults.ENSEMBLE   # 3 runs side by side
    assert set(config.chosen_from_data) == set(defaults.CHOSEN)
    config_lib.validate(config)


def test_a_panel_of_many_short_entities_gets_short_windows_and_more_steps():
    config, _ = defaults.choose(_left(), [30] * 200)
    # 30 history rows each, of which 27 train: 26 pairs, windows of 8.
    assert config.data.seq_len == 8
    windows = 200 * (26 - 8 + 1)
    assert config.train_steps == min(defaults.MAX_STEPS,
                                     100 * windows // 32)
    assert config.state_mode == "windows" and config.validate_on == "history"
    assert config.ensemble == defaults.ENSEMBLE


def test_too_short_a_history_validates_on_the_hold_out():
    config, _ = defaults.choose(_left(), [12])
    assert config.validate_on == "holdout"
    assert config.data.seq_len == 3   # 11 pairs // 3


def test_long_data_sine_and_text_keep_the_fixed_defaults():
    long, chosen = defaults.choose(_left(), [defaults.LONG_DATA_ROWS + 1])
    sine, _ = defaults.choose(defaults._set(TrainConfig(), {
        name: None for name in defaults.FIXED}))
    for config in (long, sine):
        assert (config.state_mode, config.data.seq_len, config.data.batch_size,
                config.model.units, config.train_steps, config.ensemble) == (
            "carry", 20, 32, 128, 4000, 1)
        assert config.eval_every is None and config.validate_on == "holdout"
    assert sine == TrainConfig()   # the dataclass defaults are the fixed ones


def test_a_small_text_gets_lanes_that_hold_two_chunks(tmp_path):
    from lstm_ctl.data import tasks
    text = tmp_path / "t.txt"
    text.write_text("abcdefghij" * 30)   # 300 characters, 270 of history
    config = defaults._set(TrainConfig(data=DataConfig(
        task="text", text_file=str(text))), {n: None for n in defaults.FIXED})
    config = dataclasses.replace(config, model_dir=str(tmp_path / "run"))
    config, chosen, rows = defaults.resolve(config)
    assert rows == [270] and config.state_mode == "carry"
    # 269 pairs: 20-step chunks, 6 lanes of 44 steps (32 lanes would give 8)
    assert (config.data.seq_len, config.data.batch_size) == (20, 6)
    _, arrays = tasks.build_task(config.data, "train", config.model_dir)
    assert arrays.steps >= 2 * config.data.seq_len
    assert defaults.describe(chosen, rows, "characters") == (
        "Chosen from the data (1 stream, 270 history characters): "
        "--batch_size=6 (any flag overrides; docs/forecasting.md).")


def test_a_given_setting_is_never_overridden():
    config, chosen = defaults.choose(_left(state_mode="carry", units=7), [90])
    assert "state_mode" not in chosen and "units" not in chosen
    assert config.state_mode == "carry" and config.model.units == 7
    assert config.data.seq_len == 20   # carry: the fixed defaults
    given = _left(seq_len=10, batch_size=4)
    config, chosen = defaults.choose(given, [90])
    assert (config.data.seq_len, config.data.batch_size) == (10, 4)
    assert config.state_mode == "windows"
    # 80 pairs, windows of 10: 71 windows in batches of 4
    assert config.train_steps == min(defaults.MAX_STEPS, 100 * 71 // 4)


def test_resume_takes_the_recorded_choices_not_new_ones(tmp_path):
    recorded = dataclasses.replace(
        _left(), model_dir=str(tmp_path),
        model=ModelConfig(units=5), state_mode="carry", train_steps=9,
        learning_rate=0.5, lr_schedule="cosine", validate_on="holdout",
        early_stopping=0, data=DataConfig(task="csv", csv_file="d.csv",
                                          target_columns=("y",),
                                          seq_len=3, batch_size=2),
        chosen_from_data=("units",))
    config_lib.save(recorded, str(tmp_path))
    left = dataclasses.replace(_left(), model_dir=str(tmp_path))
    config, chosen, rows = defaults.resolve(left)
    assert chosen == {} and rows is None
    assert config.model.units == 5 and config.train_steps == 9
    assert config.chosen_from_data == ("units",)


def test_train_py_says_what_it_chose_and_config_json_records_it(tmp_path):
    t = np.arange(100)
    y = np.sin(2 * np.pi * t / 12) + 0.1 * np.cos(t)
    csv = tmp_path / "d.csv"
    csv.write_text("t,y\n" + "".join(f"{i},{v:.5f}\n" for i, v in zip(t, y)))
    run = tmp_path / "run"
    result = run_main("train.py", "--task=csv", f"--csv_file={csv}",
                      "--target_columns=y", "--time_column=t",
                      f"--model_dir={run}", "--train_steps=4",
                      "--eval_every=2")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("Chosen from the data (1 stream, 90 history "
                            "rows): --state_mode=windows")
    assert "--train_steps" not in first and "--eval_every" not in first
    assert "--ensemble=3" in first
    assert "Member 3/3" in result.stdout
    # The ensemble's config.json: the members' settings, ensemble=3.
    saved = json.loads((run / "config.json").read_text())
    assert saved["ensemble"] == 3 and "ensemble" in saved["chosen_from_data"]
    assert saved["state_mode"] == "windows" and saved["train_steps"] == 4
    assert saved["data"]["seq_len"] == 24 and saved["model"]["units"] == 16
    assert "state_mode" in saved["chosen_from_data"]
    assert "train_steps" not in saved["chosen_from_data"]
    # Validation on the history's end: the best checkpoint never saw the
    # hold-out, and the progress says so.
    assert "validation at step 2:" in result.stdout
    assert "forecast" in result.stdout
