"""The target transform (lstm_ctl/data/transforms.py, --target_transform):
a changes run's numbers summed back are the levels, its hold-out forecast
reads only rows before the hold-out, auto chooses changes on a trend and
levels on a stationary series, the choice is recorded in config.json and
reused on resume and by evaluate.py (and served: in levels, equal to its
one-step predictions), and a bad value is refused."""

import csv
import json

import numpy as np
import pytest

from lstm_ctl import LSTMModel
from lstm_ctl import config as config_lib
from lstm_ctl.config import defaults
from lstm_ctl.config.train import DataConfig, TrainConfig
from lstm_ctl.data import tasks, transforms
from lstm_ctl.eval import forecast
from lstm_ctl.serve import loading
from lstm_ctl.serve.pool import StatePool
from tests.helpers import run_main


def _write(path, values):
    """A CSV `t,y`; None is a missing y."""
    path.write_text("t,y\n" + "".join(
        f"{i},{'' if v is None else f'{v:.6f}'}\n"
        for i, v in enumerate(values)))
    return path


def _trend(n=120, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50 + 0.8 * t + 2 * np.sin(2 * np.pi * t / 12) + rng.normal(
        0, 0.3, n)


def _stationary(n=120, seed=0):
    """Noise around a level, with a fast cycle (period 4)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 10 + np.sin(2 * np.pi * t / 4) + rng.normal(0, 1.0, n)


def _data(path, transform="changes", **kw):
    return DataConfig(task="csv", csv_file=str(path), target_columns=("y",),
                      time_column="t", target_transform=transform, **kw)


def test_changes_summed_back_reproduce_the_levels(tmp_path):
    values = list(_trend(60))
    values[20] = None                      # a missing level
    path = _write(tmp_path / "d.csv", values)
    task, (s,) = tasks.eval_series(_data(path, missing="ffill"), tmp_path)
    assert task.transform == "changes" and task.norm["transform"] == "changes"
    levels = np.array([np.nan if v is None else v for v in values])
    filled = levels.copy()
    filled[20] = filled[19]
    np.testing.assert_allclose(s.levels[:, 0], filled, atol=1e-5)
    np.testing.assert_allclose(
        transforms.actual_levels(task, s, 1, 60)[:, 0], filled[1:], atol=1e-5)
    # The targets are the changes: row t minus the last known level.
    changes = tasks.denormalize(task, s.targets)[:, 0]
    assert s.weights[0] == 0 and s.weights[20] == 0   # nothing before; NA
    np.testing.assert_allclose(changes[21], levels[21] - levels[19],
                               atol=1e-5)
    np.testing.assert_allclose(changes[1:20], np.diff(levels[:20]), atol=1e-5)
    # The true changes as a forecast from row 30: summed back, the levels.
    path_ = transforms.path_levels(task, [s], s.targets[None, 30:50], [30])
    np.testing.assert_allclose(path_[0, :, 0], filled[30:50], atol=1e-4)
    # One-step: each change on the level of the row before.
    steps = transforms.step_levels(task, s, s.targets[40:50], 40)
    np.testing.assert_allclose(steps[:, 0], filled[40:50], atol=1e-4)
    # The inputs are changes too (the unknown first one is 0).
    x = s.inputs[:, 0] * task.norm["std"][0] + task.norm["mean"][0]
    assert x[0] == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(x[1:20], np.diff(levels[:20]), atol=1e-4)


def test_a_changes_hold_out_forecast_reads_only_rows_before_the_hold_out(
        tmp_path):
    values = _trend(80)
    later = values.copy()
    later[72:] += 30.0                      # every hold-out row differs
    earlier = values.copy()
    earlier[71] += 30.0                     # the last history row
    model = LSTMModel(units=8, output_dim=1, input_dim=1, seed=3)
    out = {}
    for name, v in (("a", values), ("b", later), ("c", earlier)):
        d = tmp_path / name
        d.mkdir()
        task, series = tasks.eval_series(_data(_write(d / "d.csv", v)), d)
        assert series[0].cut == 72
        runner = forecast.Forecaster(model, task, seq_len=6)
        out[name] = runner.skill(series, 5)[1]
    for k in out["a"]:
        np.testing.assert_allclose(out["a"][k], out["b"][k], rtol=1e-6)
        assert np.abs(out["a"][k] - out["c"][k]).max() > 1e-3, k
    # Naive: the last history level repeated, in data units.
    np.testing.assert_allclose(out["a"]["holdout_forecast_naive"][0, :, 0],
                               np.repeat(values[71], 5), rtol=1e-5)


def test_auto_chooses_changes_on_a_trend_and_levels_on_a_stationary_one(
        tmp_path):
    assert transforms.choose([_trend()[:108, None]]) == "changes"
    assert transforms.choose([_stationary()[:108, None]]) == "levels"
    for values, expected in ((_trend(), "changes"),
                             (_stationary(), "levels")):
        path = _write(tmp_path / f"{expected}.csv", values)
        left = defaults._set(TrainConfig(
            model_dir=str(tmp_path / expected), data=_data(path, "auto")),
            {name: None for name in defaults.FIXED if name !=
             "target_transform"})
        config, chosen, _ = defaults.resolve(left)
        assert chosen["target_transform"] == expected
        assert config.data.target_transform == expected
        assert "target_transform" in config.chosen_from_data
        config_lib.validate(config)


def test_the_choice_is_recorded_and_reused_on_resume_and_evaluate(tmp_path):
    path = _write(tmp_path / "d.csv", _trend())
    run = tmp_path / "run"
    args = ("--task=csv", f"--csv_file={path}", "--target_columns=y",
            "--time_column=t", f"--model_dir={run}", "--eval_every=2",
            "--ensemble=1")
    result = run_main("train.py", *args, "--train_steps=4")
    assert result.returncode == 0, result.stderr
    assert "--target_transform=changes" in result.stdout.splitlines()[0]
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["target_transform"] == "changes"
    assert "target_transform" in saved["chosen_from_data"]
    # Resumed on data that alone would give levels: the recorded choice.
    _write(path, _stationary())
    left = TrainConfig(model_dir=str(run), data=_data(path, "auto"))
    config, chosen, _ = defaults.resolve(left)
    assert chosen == {} and config.data.target_transform == "changes"
    _write(path, _trend())
    result = run_main("train.py", *args, "--train_steps=6")
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "config.json").read_text())["data"][
        "target_transform"] == "changes"
    # evaluate.py reads it: the naive hold-out forecast is the last history
    # level repeated, the forecasts are levels (data units).
    fc, pred = tmp_path / "fc.csv", tmp_path / "pred.csv"
    out = tmp_path / "o.json"
    result = run_main("evaluate.py", f"--model_dir={run}", "--forecast=4",
                      f"--forecast_csv={fc}", f"--output_json={out}",
                      f"--predictions_csv={pred}")
    assert result.returncode == 0, result.stderr
    values = np.round(_trend(), 6)
    skill = {r["state_mode"]: r["rmse"] for r in json.loads(
        out.read_text())["rows"] if "horizon" in r}
    assert skill["holdout_forecast_naive"] == pytest.approx(
        np.sqrt(np.mean((values[108:112] - values[107]) ** 2)), rel=1e-4)
    with open(fc, newline="") as f:
        future = [float(r[-1]) for r in list(csv.reader(f))[1:]]
    # Changes summed onto the last level (about 145): levels, not changes.
    assert all(abs(v - values[-1]) < 20 for v in future), future
    # Served (the pool and units serve.py runs), the stream's rows in
    # levels give evaluate.py's one-step predictions of the hold-out, state
    # carried from the stream's start (--predictions_csv), in levels.
    served = loading.load(str(run))
    pool = StatePool(served.model, capacity=1,
                     level_dim=served.units.level_dim)
    rows, level, outputs = values[:, None], None, []
    for part in np.split(rows, [50, 110, 111, 115]):   # several rows each
        x = served.units.encode(part, level)
        y, = pool.step(["s"], [x], levels=[part[-1]])
        outputs.append(served.units.decode(y, part))
        level = pool.level("s")
    served_rows = np.concatenate(outputs)[:, 0]
    with open(pred, newline="") as f:
        carried = {int(r["time"]): float(r["predicted_carry"])
                   for r in csv.DictReader(f)}
    assert sorted(carried) == list(range(108, 120))
    np.testing.assert_allclose([served_rows[t - 1] for t in carried],
                               list(carried.values()), rtol=1e-6)


def test_a_bad_value_is_refused_with_a_clear_message(tmp_path):
    path = _write(tmp_path / "d.csv", _trend())
    result = run_main("train.py", "--task=csv", f"--csv_file={path}",
                      "--target_columns=y", f"--model_dir={tmp_path / 'r'}",
                      "--target_transform=diff")
    assert result.returncode == 1
    assert ("--target_transform must be one of levels, changes, auto (got "
            "'diff')") in result.stderr
    text = tmp_path / "t.txt"
    text.write_text("abc" * 50)
    result = run_main("train.py", "--task=text", f"--text_file={text}",
                      f"--model_dir={tmp_path / 't'}",
                      "--target_transform=changes")
    assert result.returncode == 1
    assert "--target_transform is for --task=csv" in result.stderr
