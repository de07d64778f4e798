"""The hold-out forecast (run/holdout.py Runner.backtest, shown as
holdout_forecast_*) reads only rows before the hold-out; the future forecast
(Forecaster.forecast, the future_forecast CSV column) reads them all; the
names are those docs/forecasting.md uses."""

import pathlib

import numpy as np

from lstm_ctl import LSTMModel
from lstm_ctl.data.tasks import CsvTask, Series
from lstm_ctl.eval import forecast
from lstm_ctl.eval import report
from lstm_ctl.run import holdout

ROOT = pathlib.Path(__file__).resolve().parents[2]
TASK = CsvTask(["y"], ["y"],
               norm={"columns": ["y"], "mean": [0.0], "std": [1.0],
                     "targets": [0]})


def _series(values, cut):
    x = np.asarray(values, np.float32)[:, None]
    return Series("s", x, x.copy(), np.ones(len(x), np.float32),
                  list(range(len(x))), cut)


def test_the_hold_out_forecast_reads_only_rows_before_the_hold_out():
    model = LSTMModel(units=8, output_dim=1, input_dim=1, seed=3)
    runner = forecast.Forecaster(model, TASK, seq_len=6)
    rng = np.random.default_rng(0)
    values = rng.normal(size=40)
    changed = values.copy()
    changed[30:] += 5.0           # every hold-out row differs
    a, b = _series(values, 30), _series(changed, 30)
    _, paths_a = runner.skill([a], 8)
    _, paths_b = runner.skill([b], 8)
    for name in ("holdout_forecast_carry", "holdout_forecast_reset",
                 "holdout_forecast_naive"):
        np.testing.assert_array_equal(paths_a[name], paths_b[name])
    # ... while a history row (the last, read by all three) changes them.
    early = values.copy()
    early[29] += 5.0
    _, paths_c = runner.skill([_series(early, 30)], 8)
    for name in paths_a:
        assert np.abs(paths_a[name] - paths_c[name]).max() > 1e-4, name
    # The future forecast starts after the whole series: the hold-out too.
    assert np.abs(runner.forecast([a], 3) - runner.forecast([b], 3)
                  ).max() > 1e-4


def test_the_reset_forecast_reads_only_the_last_seq_len_rows():
    model = LSTMModel(units=8, output_dim=1, input_dim=1, seed=3)
    runner = holdout.Runner(model, TASK, seq_len=6)
    values = np.random.default_rng(1).normal(size=40)
    older = values.copy()
    older[:24] += 3.0             # rows before the last 6 of the history
    pa, *_ = runner.backtest([_series(values, 30)], 5)
    pb, *_ = runner.backtest([_series(older, 30)], 5)
    np.testing.assert_array_equal(pa["reset"], pb["reset"])
    assert np.abs(pa["carry"] - pb["carry"]).max() > 1e-4


def test_the_two_forecasts_are_named_as_the_docs_name_them():
    doc = (ROOT / "docs" / "forecasting.md").read_text()
    names = ["holdout_forecast_carry", "holdout_forecast_reset",
             "holdout_forecast_naive", report.FORECAST_HEADER[-1]]
    assert report.FORECAST_HEADER[-1] == "future_forecast"
    for name in names:
        assert f"`{name}`" in doc, name
    evaluation = (ROOT / "docs" / "evaluation.md").read_text()
    assert "`" + ",".join(report.FORECAST_HEADER) + "`" in evaluation
    assert forecast.primary_forecast("windows") == "holdout_forecast_reset"
    assert forecast.primary_forecast("carry") == "holdout_forecast_carry"


def test_the_naive_forecast_repeats_the_last_observed_value():
    # The last history row's target is missing (weight 0, stored as 0): the
    # naive forecast repeats the row before it, as the one-step naive does.
    s = _series([1.0, 2.0, 3.0, 4.0, 0.0, 6.0, 7.0], 5)
    s.weights[4] = 0.0
    runner = holdout.Runner(None, TASK, seq_len=2)
    paths, *_ = runner.backtest([s], 2, modes=("naive",))
    np.testing.assert_array_equal(paths["naive"][0, :, 0], [4.0, 4.0])
    one_step, = holdout.naive_outputs(TASK, [s])
    np.testing.assert_array_equal(one_step[:, 0], [4.0, 6.0])
