"""Windows that hold a seasonal cycle: the season of a time column
(`times.season_length`) and the window train.py chooses from it
(`defaults.windows_settings`). No training."""

import numpy as np
import pandas as pd

from lstm_ctl.config import defaults
from lstm_ctl.config.train import DataConfig, TrainConfig
from lstm_ctl.data import times


def _dates(n, freq):
    return [str(t.date()) for t in pd.date_range("2000-01-01", periods=n,
                                                 freq=freq)]


def test_the_season_of_a_time_column():
    assert times.season_length(_dates(30, "W-SAT")) == 52
    assert times.season_length(_dates(30, "D")) == 7
    assert times.season_length([f"{1990 + k // 12}-{k % 12 + 1:02d}"
                                for k in range(30)]) == 12
    assert times.season_length(["1990Q1", "1990Q2", "1990Q3"]) == 4
    assert times.season_length([str(y) for y in range(1700, 1730)]) is None
    gappy = _dates(30, "W-SAT")
    del gappy[10]
    assert times.season_length(gappy) is None     # no regular step


def test_weekly_data_gets_windows_of_a_year_when_the_streams_allow():
    rows = [1850]
    assert defaults.windows_settings(rows)["seq_len"] == 24
    assert defaults.windows_settings(rows, season=52)["seq_len"] == 52
    assert defaults.windows_settings(rows, season=12)["seq_len"] == 24
    # A third of the training rows at most: 90 history rows, 80 pairs.
    assert defaults.windows_settings([90], season=52)["seq_len"] == 26


def test_train_py_reads_the_season_from_the_time_column(tmp_path):
    n = 400
    y = 300 + 0.05 * np.arange(n) + 3 * np.sin(2 * np.pi * np.arange(n)
                                              / 52)
    path = tmp_path / "w.csv"
    path.write_text("week,co2\n" + "".join(
        f"{d},{v:.4f}\n" for d, v in zip(_dates(n, "W-SAT"), y)))
    left = defaults._set(TrainConfig(
        model_dir=str(tmp_path / "run"),
        data=DataConfig(task="csv", csv_file=str(path),
                        target_columns=("co2",), time_column="week")),
        {name: None for name in defaults.FIXED})
    config, chosen, _ = defaults.resolve(left)
    assert chosen["seq_len"] == config.data.seq_len == 52
    assert "--seq_len=52" in defaults.describe(chosen, [360])
