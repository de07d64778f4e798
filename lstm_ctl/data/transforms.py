"""The target transform of a CSV task: the model forecasts the levels of the
target columns as they are, or their changes (each row minus the row before
it). A `changes` run trains on the changes (normalised by the changes'
statistics) and every number a user sees is summed back onto the last known
level, so forecasts, predictions and RMSEs stay in data units.

`--target_transform=auto` (the default, `lstm_ctl/config/defaults.py`)
chooses from the history: `choose` takes changes for a persistent series
(its levels vary much more than its changes: a trend, a random walk, a slow
cycle) and levels for noise around a level (docs/forecasting.md has the
measurements, and why not the validation forecast). No TensorFlow here.
"""

import dataclasses

import numpy as np

TRANSFORMS = ("levels", "changes")
# auto: changes when the levels vary at least this many times as much as
# the changes (docs/forecasting.md: river flows 1.02, industrial index 1.23,
# sunspots 1.65, CO2 29.6: levels forecast better on the first two).
PERSISTENCE = 1.5


def _filled(y):
    """`[L, O]` with each NaN replaced by the last value before it (NaN
    where there is none yet)."""
    y = np.asarray(y, np.float64)
    out = y.copy()
    for j in range(y.shape[1]):
        present = ~np.isnan(y[:, j])
        last = np.maximum.accumulate(np.where(present, np.arange(len(y)),
                                              -1))
        out[:, j] = np.where(last >= 0, y[np.maximum(last, 0), j], np.nan)
    return out


def changes(y):
    """`[L, O]` levels (NaN: missing) -> changes: row t minus the last
    known level before it; NaN in row 0 and where row t is missing."""
    prev = np.concatenate([np.full((1, y.shape[1]), np.nan),
                           _filled(y)[:-1]])
    return np.asarray(y, np.float64) - prev


def table_changes(table):
    """`(table, levels)`: a `readers.CsvTable` whose target columns, as
    targets and as inputs, hold their changes (an input's unknown change,
    row 0, is 0), and `[L, O]` the known levels of each stream (missing
    rows filled forward) to sum forecasts back onto."""
    streams, levels = [], []
    for s in table.streams:
        inputs = np.array(s.inputs, np.float64)
        for j, c in enumerate(table.input_columns):
            if c in table.target_columns:
                x = inputs[:, j:j + 1]
                inputs[:, j] = np.nan_to_num(changes(x)[:, 0], nan=0.0)
        streams.append(dataclasses.replace(s, inputs=inputs,
                                           targets=changes(s.targets)))
        levels.append(_filled(s.targets))
    return dataclasses.replace(table, streams=streams), levels


def denormalize(task, y):
    """`[..., O]` normalised target values -> data units (identity for
    sine; text: not used). Of a changes run: the changes (the functions
    below sum them back onto levels)."""
    if task.norm is None:
        return np.asarray(y)
    at = task.norm["targets"]
    return (np.asarray(y) * np.array(task.norm["std"])[at]
            + np.array(task.norm["mean"])[at])


def is_changes(task):
    return getattr(task, "transform", "levels") == "changes"


def zero_change(task):
    """`[O]` float32: no change, normalised (the naive forecast of a
    changes run: the last level repeated)."""
    at = task.norm["targets"]
    return (-np.array(task.norm["mean"])[at]
            / np.array(task.norm["std"])[at]).astype(np.float32)


def path_levels(task, series, values, starts):
    """`[B, H, O]` model outputs (normalised), the rows from `starts[i]`
    on of stream i -> data units: levels as they are, changes summed onto
    the level of row `starts[i] - 1`."""
    y = denormalize(task, values)
    if not is_changes(task):
        return y
    anchor = np.stack([s.levels[a - 1] for s, a in zip(series, starts)])
    return anchor[:, None] + np.cumsum(y, axis=1)


def step_levels(task, s, values, a):
    """`[n, O]` one-step outputs for rows [a, a + n) of stream `s` -> data
    units (changes: each added to the known level of the row before)."""
    y = denormalize(task, values)
    if not is_changes(task):
        return y
    return s.levels[a - 1:a - 1 + len(y)] + y


def actual_levels(task, s, a, b):
    """`[b - a, O]` the actual targets of rows [a, b) in data units."""
    if is_changes(task):
        return s.levels[a:b]
    return denormalize(task, s.targets[a:b])


def persistence(y):
    """How much less a series' changes vary than its levels: std(levels) /
    std(changes) of `[rows]` values (NaN missing, skipped); None when it
    cannot be told (fewer than 3 values, or no change). Equal to
    1 / sqrt(2 (1 - r)), r the lag-1 autocorrelation: 0.71 for white
    noise, 1.5 at r = 0.78, growing without bound on a trend or a random
    walk."""
    v = np.asarray(y, np.float64)
    v = v[~np.isnan(v)]
    d = np.diff(v)
    if len(v) < 3 or not np.std(d) > 0:
        return None
    return float(np.std(v) / np.std(d))


def choose(histories):
    """`"levels"` or `"changes"` for streams whose history targets are
    `histories` (`[rows, O]` arrays, data units, NaN missing): changes when
    the series are persistent (the median `persistence` of their columns
    is at least PERSISTENCE: each row is mostly the row before plus a small
    change), levels otherwise (noise around a level, a fast cycle)."""
    found = [persistence(y[:, j]) for y in histories
             for j in range(np.shape(y)[1])]
    found = [p for p in found if p is not None]
    if found and float(np.median(found)) >= PERSISTENCE:
        return "changes"
    return "levels"
