"""Settings chosen from the data: what train.py uses for a setting it is not
given (see docs/forecasting.md for the measurements behind the choices).

A CSV of short series (or a panel of many) trains best as forecasting
libraries train: random windows from the initial state (`windows` mode), a
small model, about 100 passes over the windows, a constant learning rate,
and the best checkpoint chosen on the end of each history (`validate_on=
history`), so the hold-out stays unseen. Long data (more than
LONG_DATA_ROWS history rows), text and sine keep the fixed defaults: the
state carried over long lanes. Every choice is only a default: a flag (or a
value set in Python) overrides it, and config.json records what was chosen.
No TensorFlow here.
"""

import dataclasses
import os

import numpy as np

from lstm_ctl.config import train as train_config
from lstm_ctl.data import task_classes, times, transforms
from lstm_ctl.data.readers import holdout_cut
from lstm_ctl.config import ensemble

# setting -> where it lives in TrainConfig; the value when nothing is chosen
# from the data (sine, text, long CSV data, or --state_mode other than
# windows).
FIXED = {
    "state_mode": ((), "carry"),
    "train_steps": ((), 4000),
    "learning_rate": ((), 3e-3),
    "lr_schedule": ((), "cosine"),
    "validate_on": ((), "holdout"),
    "early_stopping": ((), 0),
    "seq_len": (("data",), 20),
    "batch_size": (("data",), 32),
    "units": (("model",), 128),
    "target_transform": (("data",), "levels"),
    "ensemble": ((), 1),
}
# eval_every is also chosen in windows mode; its own default (None: every
# checkpoint) stays otherwise.
CHOSEN = tuple(FIXED) + ("eval_every",)

LONG_DATA_ROWS = 100_000   # more history rows than this: carry over lanes
WINDOW = 24                # the longest training window (rows)
WINDOW_UNITS = 16
WINDOW_BATCH = 32
PASSES = 100               # passes over all windows
MIN_STEPS, MAX_STEPS = 200, 3000
EVALUATIONS = 40           # validations per run
PATIENCE = 0               # no early stopping (docs/forecasting.md)
MIN_VALIDATION_HISTORY = 20  # history rows a stream needs to give its end
ENSEMBLE = 3               # runs side by side (docs/forecasting.md)


def _get(config, name):
    path, _ = FIXED.get(name, ((), None))
    for part in path:
        config = getattr(config, part)
    return getattr(config, name)


def _set(config, values):
    """`config` with `values` ({setting: value}) in their places."""
    top = {k: v for k, v in values.items() if not FIXED.get(k, ((),))[0]}
    for part in ("data", "model"):
        inner = {k: v for k, v in values.items()
                 if FIXED.get(k, ((),))[0] == (part,)}
        if inner:
            top[part] = dataclasses.replace(getattr(config, part), **inner)
    return dataclasses.replace(config, **top)


def unset(config):
    """The settings of `config` left to the data (None). `eval_every` is
    one of them only beside another: alone, None is its own default (every
    checkpoint)."""
    left = [name for name in FIXED if _get(config, name) in (None, "auto")]
    return left + (["eval_every"] if left and config.eval_every is None
                   else [])


def windows_settings(history_rows, validate_on="history", seq_len=None,
                     batch_size=None, season=None):
    """The windows-mode settings for streams of `history_rows` rows each:
    `{setting: value}`. `season`: the rows of one seasonal cycle (weekly
    data: 52): a window holds one when it is longer than WINDOW rows (a
    third of a typical stream at most)."""
    if validate_on is None:
        validate_on = ("history" if min(history_rows) >=
                       MIN_VALIDATION_HISTORY else "holdout")
    rows = [holdout_cut(n) if validate_on == "history" else n
            for n in history_rows]
    pairs = [max(n - 1, 1) for n in rows]
    typical = sorted(pairs)[len(pairs) // 2]
    if seq_len is None:
        seq_len = max(2, min(max(WINDOW, season or 0), typical // 3))
    windows = sum(max(1, p - seq_len + 1) for p in pairs)
    if batch_size is None:
        batch_size = max(1, min(WINDOW_BATCH, windows))
    steps = PASSES * windows // batch_size
    steps = max(MIN_STEPS, min(MAX_STEPS, steps))
    return {"state_mode": "windows", "seq_len": seq_len,
            "batch_size": batch_size, "units": WINDOW_UNITS,
            "train_steps": steps, "learning_rate": 1e-3,
            "lr_schedule": "constant", "validate_on": validate_on,
            "eval_every": max(10, steps // EVALUATIONS),
            "early_stopping": PATIENCE, "ensemble": ENSEMBLE}


def _task(config):
    """The class of `config`'s task (`task_classes.TASKS`): what it reads
    (a file; a table of columns) and what its steps are called. An unknown
    name (which validation refuses) has none of it."""
    return task_classes.TASKS.get(config.data.task, task_classes.Task)


def with_fixed(config):
    """`config` with the settings left to the data at their fixed values
    (to check the flags before the data is read)."""
    return choose(config)[0]


def choose(config, history_rows=None, histories=None, season=None):
    """`(config, chosen)`: `config` (a TrainConfig) with every setting left
    to the data (None) filled in, and `{setting: value}` of those chosen.
    `history_rows`: the history rows (before the hold-out) of each stream
    (csv, text); None (sine) gives the fixed defaults. A csv task up to
    LONG_DATA_ROWS gets windows mode; otherwise the fixed defaults, with
    lanes short and few enough to hold two chunks each. `histories` (csv:
    each stream's history targets, `[rows, O]` in data units, NaN where
    missing): the target transform (`transforms.choose`; levels without
    them). `season`: the rows of a seasonal cycle (`times.season_length`)."""
    left = unset(config)
    if not left:
        return config, {}
    mode = config.state_mode
    windows = bool(history_rows) and (mode == "windows" or (
        mode is None and _task(config).has_columns
        and sum(history_rows) <= LONG_DATA_ROWS))
    if windows:
        values = windows_settings(
            history_rows, config.validate_on, config.data.seq_len,
            config.data.batch_size, season)
    else:
        values = {name: fixed for name, (_, fixed) in FIXED.items()}
        values.update(eval_every=None, state_mode=mode or "carry")
        if history_rows:   # lanes that hold two chunks at least
            pairs = sum(max(n - 1, 0) for n in history_rows)
            seq_len = config.data.seq_len or max(
                2, min(values["seq_len"], pairs // 4))
            values.update(seq_len=seq_len, batch_size=max(1, min(
                values["batch_size"], pairs // (2 * seq_len))))
    values.setdefault("target_transform", "levels")
    if histories and _task(config).has_columns:
        values["target_transform"] = transforms.choose(histories)
    chosen = {name: values[name] for name in left}
    config = _set(config, chosen)
    if history_rows:
        names = tuple(k for k in chosen if chosen[k] is not None)
        config = dataclasses.replace(config, chosen_from_data=names)
    return config, chosen


def resolve(config):
    """`(config, chosen, history_rows)`: the settings of `config` left to
    the data (None) filled in: those a resumed run recorded in its
    config.json, then the others chosen from the data (csv, text: the
    history rows of each stream, read here; no TensorFlow)."""
    if not unset(config):
        return config, {}, None
    recorded = ensemble.recorded_dir(config.model_dir)
    if os.path.exists(train_config.config_path(recorded)):
        saved = train_config.load(recorded)
        config = _set(config, {n: _get(saved, n) for n in unset(config)})
        return dataclasses.replace(
            config, chosen_from_data=saved.chosen_from_data), {}, None
    rows = histories = season = None
    if _task(config).reads_file:
        from lstm_ctl.data import tasks
        data = dataclasses.replace(config.data, target_transform="levels")
        task, series = tasks.eval_series(data, config.model_dir)
        rows = [s.cut for s in series]
        if _task(config).has_columns:
            season = times.season_length(series[0].times[:series[0].cut])
            histories = [np.where(s.weights[:s.cut, None] > 0,
                                  tasks.denormalize(task, s.targets[:s.cut]),
                                  np.nan) for s in series]
    config, chosen = choose(config, rows, histories, season)
    return config, chosen, rows


def resolve_and_describe(config):
    """`(config, chosen, line)`: `resolve`, and the one line that says what
    was chosen from the data ("" when nothing was)."""
    config, chosen, rows = resolve(config)
    unit = _task(config).unit_name
    return config, chosen, describe(chosen, rows, unit) if rows else ""


def describe(chosen, history_rows=None, unit="rows"):
    """One line: what was chosen (the values other than the fixed ones),
    from what, and that flags override it ("" when nothing differs)."""
    if not chosen:
        return ""
    flags = " ".join(f"--{k}={v}" for k, v in chosen.items()
                     if v is not None and v != FIXED.get(k, (0, None))[1])
    if not flags:
        return ""
    if history_rows:
        n = len(history_rows)
        what = (f"{n} stream{'s' if n > 1 else ''}, "
                f"{sum(history_rows)} history {unit}")
        return (f"Chosen from the data ({what}): {flags} (any flag "
                "overrides; docs/forecasting.md).")
    return f"Defaults: {flags}."
