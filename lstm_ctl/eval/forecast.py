"""Autoregressive roll-out and forecasts, on the streams of
`data.eval_series` (one lane each). The warm-up over the history, the
one-step predictions and their scores are run/holdout.py's (shared with
validation during training); their CSV files, tables and figure are
report.py's.

A roll-out from a state feeds the last observed input, then each prediction
back as the next input.
"""

import numpy as np

from lstm_ctl.run import holdout


def _rmse(pred, actual, weights):
    err = ((pred - actual) ** 2).mean(-1)
    return float(np.sqrt((err * weights).sum() / max(weights.sum(), 1e-12)))


def primary_forecast(state_mode):
    """The forecast a run's state mode is trained for: from the carried
    state of the whole history (carry, stored), or from the initial state
    warmed up over the last `seq_len` rows (reset, windows)."""
    return "holdout_forecast_" + holdout.forecast_mode(state_mode)


class Forecaster(holdout.Runner):
    """The hold-out runner (warm-up, predictions, scores, roll-outs and
    backtests: run/holdout.py), plus the forecast past the data's end."""

    def forecast(self, series, horizon):
        """`[B, horizon, O]` in data units (text: logits): the roll-out
        after the whole series (history and hold-out), from the carried
        state (a changes run: summed onto the last level)."""
        state = self.warm_up(series, [len(s.inputs) - 1 for s in series])
        x_last = np.stack([s.inputs[-1] for s in series])
        values = self.rollout(state, x_last, horizon)
        return self.task.path_values(series, values,
                                     [len(s.inputs) for s in series])

    def skill(self, series, horizon, warm_state=None):
        """Forecasts of the first `horizon` hold-out rows from the end of the
        history, in data units: `({"holdout_forecast_carry": rmse, ...},
        paths)` (see `holdout.Runner.backtest`)."""
        paths, actual, weights, n = self.backtest_levels(series, horizon,
                                                         warm_state)
        paths = {f"holdout_forecast_{k}": v for k, v in paths.items()}
        rmse = {name: _rmse(np.concatenate([p[i, :k]
                                            for i, k in enumerate(n)]),
                            actual, weights)
                for name, p in paths.items()}
        return rmse, paths
