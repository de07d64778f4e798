"""Tasks as streams: every task is a list of `Series` (a sine signal, a
text file, a CSV entity or file; reading and validating files is
readers.py's job) with what it needs to be read again (vocabulary,
normalisation), and becomes `StreamArrays` through the lane layout
(lanes.py; tf.data: pipelines.py). What a task is and does (features,
loss, baseline, saved files) is its class's (task_classes.py); this module
reads the data of each.
"""

import dataclasses
import os

import numpy as np

from lstm_ctl.data import readers as tables
from lstm_ctl.data import transforms
from lstm_ctl.data.transforms import denormalize  # noqa: F401
from lstm_ctl.data.lanes import (  # noqa: F401
    Series, StreamArrays, history_split, lanes_from_streams, lay_out,
    next_step_arrays, series_arrays, series_pairs, stream_lanes)
from lstm_ctl.data.readers import holdout_cut
from lstm_ctl.data.task_classes import (  # noqa: F401
    NORM_FILE, STREAMS_FILE, TASKS, VOCAB_FILE, CsvTask, SineTask, Task,
    TextTask, task_class)

SINE_LANE_STEPS = {"train": 20000, "eval": 4000}


# ---------------------------------------------------------------- tasks
def sine_streams(seed):
    """Endless multi-frequency signals, each with its own random parameters.

    A stream is 2 to 3 sinusoids with periods of 10 to 100 steps, random
    amplitudes and phases, plus white noise (std 0.02 to 0.08); 400 to 1200
    steps long. Telling the
    frequencies apart takes more history than one short chunk holds.
    """
    rng = np.random.default_rng(seed)
    while True:
        length = int(rng.integers(400, 1201))
        k = int(rng.integers(2, 4))
        periods = rng.uniform(10.0, 100.0, size=k)
        amps = rng.uniform(0.2, 1.0, size=k)
        amps = amps / amps.sum()
        phases = rng.uniform(0, 2 * np.pi, size=k)
        t = np.arange(length)[:, None]
        signal = (amps * np.sin(2 * np.pi * t / periods + phases)).sum(1)
        noise = rng.uniform(0.02, 0.08) * rng.standard_normal(length)
        yield (signal + noise).astype(np.float32)[:, None]  # [L, 1]


def _sine_seed(config, split):
    return config.seed if split == "train" else config.seed + 1_000_003


def sine_task(config, split):
    values, starts = lanes_from_streams(
        sine_streams(_sine_seed(config, split)), config.batch_size,
        SINE_LANE_STEPS[split] + 1)
    return SineTask(), next_step_arrays(values, starts)


def sine_series(config):
    """The eval-seed signals, one per lane, cut at half their length."""
    signals = sine_streams(_sine_seed(config, "eval"))
    series = []
    for i in range(config.batch_size):
        x = next(signals)
        series.append(Series(str(i), x, x, np.ones(len(x), np.float32),
                             list(range(len(x))), len(x) // 2))
    return SineTask(), series


def text_series(config, model_dir):
    vocab, files = tables.read_text_ids(
        config.text_file, os.path.join(model_dir, VOCAB_FILE))
    series = [Series(name, ids, ids, np.ones(len(ids), np.float32),
                     list(range(len(ids))), holdout_cut(len(ids)))
              for name, ids in files]
    task = TextTask(vocab, streams=_summary(series))
    return task, series


def csv_series(config, model_dir, frame=None):
    table = tables.read_csv_table(config, frame)
    inputs, targets = table.input_columns, table.target_columns
    columns = inputs + [c for c in targets if c not in inputs]
    transform = getattr(config, "target_transform", None) or "levels"
    levels = [None] * len(table.streams)
    if transform == "changes":
        table, levels = transforms.table_changes(table)
    norm_path = os.path.join(model_dir, NORM_FILE)
    if os.path.exists(norm_path):
        norm = tables.read_json(norm_path)
        if norm["columns"] != columns:
            raise ValueError(
                f"the columns read from {_source(config, frame)} "
                f"({columns}: inputs, then targets) are not those the model "
                f"was trained on ({norm['columns']}, {norm_path}).")
        if norm.get("transform", "levels") != transform:
            raise ValueError(
                f"{norm_path} normalises the {norm.get('transform', 'levels')}"
                f" of the targets, but --target_transform={transform}: "
                "evaluate a run with the transform its config.json records.")
    else:
        norm = dict(tables.column_statistics(table, columns),
                    transform=transform)
    mean, std = np.array(norm["mean"]), np.array(norm["std"])
    at = [columns.index(c) for c in targets]
    series = []
    for s, level in zip(table.streams, levels):
        y = (s.targets - mean[at]) / std[at]
        present = ~np.isnan(y).any(1)
        series.append(Series(
            s.name, ((s.inputs - mean[:len(inputs)]) / std[:len(inputs)]
                     ).astype(np.float32),
            np.where(present[:, None], y, 0.0).astype(np.float32),
            present.astype(np.float32), s.times, holdout_cut(len(y)), level))
    task = CsvTask(inputs, targets, norm=dict(norm, targets=at),
                   streams=_summary(series), transform=transform)
    return task, series


def _summary(series):
    return [{"name": s.name, "rows": len(s.weights),
             "held_out": len(s.weights) - s.cut} for s in series]


def _source(config, frame=None):
    if frame is not None:
        return tables.DATAFRAME
    flag = task_class(config.task).file_flag
    return f"--{flag} {getattr(config, flag)!r}"


def _with_frame(config, frame):
    """csv: the config of data read from `frame` (a pandas DataFrame)."""
    config = getattr(config, "data", config)
    if frame is None:
        return config
    return dataclasses.replace(config, task="csv")


def eval_series(config, model_dir, frame=None):
    """(Task, List[Series]) for evaluation, with the vocabulary /
    normalisation saved in model_dir. text/csv: every stream (file or
    entity), cut at its hold-out. sine: the eval-seed signals (as many as
    batch_size), cut at half their length. `config`: a DataConfig (or a
    TrainConfig). `frame`: a pandas DataFrame read instead of
    `config.csv_file` (see `frame_series`)."""
    config = _with_frame(config, frame)
    if frame is not None:
        return csv_series(config, model_dir, frame)
    if config.task == "sine":
        return sine_series(config)
    if config.task == "text":
        return text_series(config, model_dir)
    if config.task == "csv":
        return csv_series(config, model_dir)
    raise ValueError(f"unknown task {config.task!r}")


def _train_windows_arrays(config, series, name):
    arrays = stream_lanes(series)
    if int(arrays.lengths.max()) < 2:
        raise ValueError(f"{name} has fewer than 2 steps per stream: use "
                         "more data.")
    return arrays


def build_task(config, split="train", model_dir=".", frame=None,
               state_mode=None, validate_on="holdout"):
    """`(Task, StreamArrays)` for `config` (a DataConfig); split train/eval.

    A vocabulary or normalisation saved in `model_dir` is used when present;
    nothing is written (see `Task.save`). `frame`: a pandas DataFrame
    read instead of `config.csv_file` (see `frame_task`). `state_mode=
    "windows"` (train split, text/csv): one lane per stream, for windows
    drawn from anywhere in it (`pipelines.windows_dataset`).
    `validate_on="history"` (train split, text/csv): train on the rows
    before each history's last 10% (`history_split`).
    """
    config = _with_frame(config, frame)
    windows = state_mode == "windows" and split == "train"
    kind = task_class(config.task)
    if not kind.reads_file:
        task, arrays = sine_task(config, split)
    else:
        task, series = eval_series(config, model_dir, frame)
        if validate_on == "history" and split == "train":
            series = history_split(series)
        source = (tables.DATAFRAME if frame is not None else repr(
            getattr(config, kind.file_flag)))
        name = f"the {split} part of {source}"
        if windows:
            return task, _train_windows_arrays(config, series, name)
        arrays = series_arrays(series, split, config.batch_size,
                               config.seq_len, name)
    if windows:
        return task, arrays
    if arrays.steps < config.seq_len:
        fix = f"--seq_len={arrays.steps} or less" + (
            ", or a smaller --batch_size" if config.batch_size > 1 else "")
        raise ValueError(
            f"the {split} data of task {config.task!r} gives each of the "
            f"{config.batch_size} parallel streams {arrays.steps} steps, "
            f"fewer than one chunk of --seq_len={config.seq_len}. Use "
            f"{fix}, or more data.")
    return task, arrays


def frame_task(frame, config, split="train", model_dir="."):
    """`(Task, StreamArrays)` of a pandas DataFrame, as `build_task` gives
    them for the same table in a CSV file: `config` is a DataConfig (its
    `csv_file` unset; `task` is taken as "csv") naming the target, input,
    time and id columns; a named index (e.g. `df.set_index("date")`) can
    be the time or id column. Typed columns are read as they are
    (datetimes, periods, numbers), text cells as in a file.
    To train (config.json must name a file that evaluate.py can read
    again), write the frame with `write_frame(df, path)` and pass
    `csv_file=path`."""
    return build_task(config, split, model_dir, frame=frame)


def frame_series(frame, config, model_dir="."):
    """`(Task, List[Series])` of a pandas DataFrame, as `eval_series` gives
    them for the same table in a CSV file (see `frame_task`)."""
    return eval_series(config, model_dir, frame=frame)
