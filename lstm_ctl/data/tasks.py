"""Tasks as streams, and the streams as parallel lanes (tf.data: pipelines.py).

Every task is a list of `Series` (a sine signal, a text file, a CSV entity
or file; reading and validating files is readers.py's job), and becomes
`StreamArrays`: `B` lanes of `N` next-step pairs. Lane i is a concatenation
of streams (whole sine signals, or consecutive stretches of the text/CSV
streams); `resets` marks where a stream (or the lane) starts, so no state
flows from one stream into the next, and `weights` is 0 where there is no
target (a missing CSV target, padding). In carry mode batch k is
`lanes[:, kT:(k+1)T]`, so row i of batch k+1 continues row i of batch k; in
reset mode the chunks are shuffled and every chunk starts from the initial
state.
"""

import dataclasses
import os
from typing import List, Optional

import numpy as np

from lstm_ctl import files
from lstm_ctl.data import readers as tables
from lstm_ctl.data.readers import holdout_cut

SINE_LANE_STEPS = {"train": 20000, "eval": 4000}
VOCAB_FILE = "vocab.json"
NORM_FILE = "normalization.json"
STREAMS_FILE = "streams.json"


@dataclasses.dataclass
class StreamArrays:
    """`B` lanes of `N` steps: inputs, next-step targets, resets, weights."""
    inputs: np.ndarray      # [B, N, D] float32, or [B, N] int32 (text ids)
    targets: np.ndarray     # [B, N, O] float32, or [B, N] int32 (text ids)
    resets: np.ndarray      # [B, N] bool: a stream starts at this step
    weights: np.ndarray     # [B, N] float32: 0 where no target in-stream
    # csv: the targets of row t itself ([B, N, O], gaps filled), for the
    # repeat-last-value baseline.
    last_targets: Optional[np.ndarray] = None
    # The real (unpadded) steps of each lane [B]; None: every step.
    lengths: Optional[np.ndarray] = None

    @property
    def lanes(self):
        return self.resets.shape[0]

    @property
    def steps(self):
        return self.resets.shape[1]


@dataclasses.dataclass
class Task:
    name: str
    input_dim: int
    output_dim: int
    loss: str                         # "mse" or "xent"
    metric: str                       # "rmse", "bpc" or "mae"
    baseline_name: str
    vocab: Optional[List[str]] = None
    # csv: "columns" (the inputs, then targets that are not inputs), their
    # "mean" and "std", and "targets" (indices of the targets in "columns").
    norm: Optional[dict] = None
    input_columns: Optional[List[str]] = None    # csv only
    target_columns: Optional[List[str]] = None   # csv only
    streams: Optional[List[dict]] = None   # text/csv: name, rows, held-out


@dataclasses.dataclass
class Series:
    """One stream before the lane layout: a CSV entity or file, a text file,
    a sine signal. Next-step pairs are inputs[t] -> targets[t + 1]."""
    name: str              # the id value, the file's base name, or "0", "1"
    inputs: np.ndarray     # [L, D] float32 normalised, or [L] int32 ids
    targets: np.ndarray    # [L, O] float32 normalised, or [L] int32 ids
    weights: np.ndarray    # [L] float32: 0 where row t's target is missing
    times: list            # [L] time cells as written (str), or row indices
    cut: int               # rows [0, cut): history (train); [cut, L): hold-out


# ------------------------------------------------------------ sine layout
def lanes_from_streams(streams, lanes, steps):
    """Packs whole streams (arrays `[L, ...]`) into `lanes` lanes of `steps`.

    Streams are taken in order, filling lane 0, then lane 1, ...; a stream
    that does not fit at the end of a lane is cut. Returns
    `(values [lanes, steps, ...], starts [lanes, steps])`.
    """
    it = iter(streams)
    values, starts = [], []
    for _ in range(lanes):
        parts, flags, total = [], [], 0
        while total < steps:
            s = next(it)[:steps - total]
            parts.append(s)
            f = np.zeros(len(s), bool)
            f[0] = True
            flags.append(f)
            total += len(s)
        values.append(np.concatenate(parts))
        starts.append(np.concatenate(flags))
    return np.stack(values), np.stack(starts)


def next_step_arrays(values, starts, targets_of=lambda v: v):
    """Inputs at t, targets at t+1, masked where t+1 starts a new stream."""
    inputs = values[:, :-1]
    targets = targets_of(values)[:, 1:]
    resets = starts[:, :-1]
    weights = (~starts[:, 1:]).astype(np.float32)
    return StreamArrays(inputs, targets, resets, weights)


# ------------------------------------------------------- text/csv layout
def _last_observed(series):
    """Row t's targets, a missing one replaced by the last observed one."""
    seen = np.where(series.weights > 0, np.arange(len(series.weights)), 0)
    return series.targets[np.maximum.accumulate(seen)]


def series_pairs(series, split):
    """Every series' next-step pairs of `split`, concatenated: `(inputs,
    targets, resets, weights, last_targets)`, each `[P, ...]`. The train
    pairs have their targets in rows [1, cut), the eval pairs in [cut, L)."""
    parts = []
    for s in series:
        lo, hi = (0, s.cut) if split == "train" else (s.cut - 1, len(s.weights))
        resets = np.zeros(hi - lo - 1, bool)
        resets[0] = True
        parts.append((s.inputs[lo:hi - 1], s.targets[lo + 1:hi], resets,
                      s.weights[lo + 1:hi], _last_observed(s)[lo:hi - 1]))
    return [np.concatenate(p) for p in zip(*parts)]


def lay_out(pairs, lanes, per_lane, steps):
    """Lane i gets pairs [i * per_lane, (i + 1) * per_lane), padded with
    weight 0 up to `steps`; every lane starts with a reset."""
    out = []
    for a in pairs:
        pieces = [a[i * per_lane:(i + 1) * per_lane] for i in range(lanes)]
        out.append(np.stack([np.concatenate([p, np.zeros(
            (steps - len(p),) + a.shape[1:], a.dtype)]) for p in pieces]))
    arrays = StreamArrays(*out)
    arrays.resets[:, 0] = True
    return arrays


def stream_lanes(series):
    """Windows mode: the train pairs of each stream in a lane of its own
    (padded with weight 0 to the longest), with each lane's real length."""
    per_stream = [series_pairs([s], "train") for s in series]
    lengths = np.array([len(p[0]) for p in per_stream])
    steps = int(lengths.max())
    parts = [lay_out(p, 1, steps, steps) for p in per_stream]
    arrays = StreamArrays(*[np.concatenate([getattr(a, k) for a in parts])
                            for k in ("inputs", "targets", "resets",
                                      "weights", "last_targets")])
    arrays.lengths = lengths
    return arrays


def series_arrays(series, split, batch_size, seq_len, name):
    """Train: `batch_size` lanes of equal length (the remainder dropped).
    Eval: every pair, in at most `batch_size` lanes of at least one chunk
    of `seq_len` each; a lane's last partial chunk is padded with weight 0."""
    pairs = series_pairs(series, split)
    total = len(pairs[0])
    if split == "train":
        steps = total // batch_size
        if steps < 2:
            # Only fixes that work: a batch size whose lanes hold a chunk.
            fits = total // max(2, seq_len)
            if fits > 1:
                fix = f"Use --batch_size={fits} or less, or more data."
            elif fits == 1:
                fix = "Use --batch_size=1, or more data."
            elif total >= 2:
                fix = (f"Use --batch_size=1 and --seq_len={total} or less, "
                       "or more data.")
            else:
                fix = "Use more data."
            raise ValueError(
                f"{name} has {total} steps, too few for {batch_size} parallel"
                f" streams (batch_size={batch_size}): each stream needs at "
                f"least 2 steps. {fix}")
        return lay_out(pairs, batch_size, steps, steps)
    lanes = min(batch_size, max(1, total // seq_len))
    per_lane = -(-total // lanes)
    lanes = -(-total // per_lane)
    return lay_out(pairs, lanes, per_lane, -(-per_lane // seq_len) * seq_len)


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
    task = Task("sine", 1, 1, "mse", "rmse", "repeat-last-value")
    return task, next_step_arrays(values, starts)


def sine_series(config):
    """The eval-seed signals, one per lane, cut at half their length."""
    signals = sine_streams(_sine_seed(config, "eval"))
    series = []
    for i in range(config.batch_size):
        x = next(signals)
        series.append(Series(str(i), x, x, np.ones(len(x), np.float32),
                             list(range(len(x))), len(x) // 2))
    return Task("sine", 1, 1, "mse", "rmse", "repeat-last-value"), series


def text_series(config, model_dir):
    vocab, files = tables.read_text_ids(
        config.text_file, os.path.join(model_dir, VOCAB_FILE))
    series = [Series(name, ids, ids, np.ones(len(ids), np.float32),
                     list(range(len(ids))), holdout_cut(len(ids)))
              for name, ids in files]
    task = Task("text", len(vocab), len(vocab), "xent", "bpc", "unigram",
                vocab=vocab, streams=_summary(series))
    return task, series


def csv_series(config, model_dir, frame=None):
    table = tables.read_csv_table(config, frame)
    inputs, targets = table.input_columns, table.target_columns
    columns = inputs + [c for c in targets if c not in inputs]
    norm_path = os.path.join(model_dir, NORM_FILE)
    if os.path.exists(norm_path):
        norm = tables.read_json(norm_path)
        if norm["columns"] != columns:
            raise ValueError(
                f"the columns read from {_source(config, frame)} "
                f"({columns}: inputs, then targets) are not those the model "
                f"was trained on ({norm['columns']}, {norm_path}).")
    else:
        norm = tables.column_statistics(table, columns)
    mean, std = np.array(norm["mean"]), np.array(norm["std"])
    at = [columns.index(c) for c in targets]
    series = []
    for s in table.streams:
        y = (s.targets - mean[at]) / std[at]
        present = ~np.isnan(y).any(1)
        series.append(Series(
            s.name, ((s.inputs - mean[:len(inputs)]) / std[:len(inputs)]
                     ).astype(np.float32),
            np.where(present[:, None], y, 0.0).astype(np.float32),
            present.astype(np.float32), s.times, holdout_cut(len(y))))
    task = Task("csv", len(inputs), len(targets), "mse", "mae",
                "repeat-last-value", norm=dict(norm, targets=at),
                input_columns=inputs, target_columns=targets,
                streams=_summary(series))
    return task, series


def _summary(series):
    return [{"name": s.name, "rows": len(s.weights),
             "held_out": len(s.weights) - s.cut} for s in series]


def _source(config, frame=None):
    if frame is not None:
        return tables.DATAFRAME
    if config.task == "text":
        return f"--text_file {config.text_file!r}"
    return f"--csv_file {config.csv_file!r}"


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


def denormalize(task, y):
    """`[..., O]` normalised target values -> data units (identity for
    sine; text: not used)."""
    if task.norm is None:
        return y
    at = task.norm["targets"]
    return (np.asarray(y) * np.array(task.norm["std"])[at]
            + np.array(task.norm["mean"])[at])


def save_task_files(task, model_dir):
    """Writes what evaluation needs to read the data as training did: the
    vocabulary (text) or the normalisation statistics (csv), and the
    streams found (name, rows, held-out rows)."""
    if task.vocab is not None:
        _write_json(os.path.join(model_dir, VOCAB_FILE), task.vocab)
    if task.norm is not None:
        norm = {k: task.norm[k] for k in ("columns", "mean", "std")}
        _write_json(os.path.join(model_dir, NORM_FILE), norm)
    if task.streams is not None:
        _write_json(os.path.join(model_dir, STREAMS_FILE), task.streams)


def _write_json(path, value):
    files.write_json(path, value)


def _train_windows_arrays(config, series, name):
    arrays = stream_lanes(series)
    if int(arrays.lengths.max()) < 2:
        raise ValueError(f"{name} has fewer than 2 steps per stream: use "
                         "more data.")
    return arrays


def history_split(series):
    """`--validate_on=history`: each stream cut to its history [0, cut),
    whose own last 10% becomes the rows validation scores; training reads
    only the rows before them, and never the hold-out."""
    out = []
    for s in series:
        end = max(s.cut, 2)
        out.append(Series(s.name, s.inputs[:end], s.targets[:end],
                          s.weights[:end], s.times[:end], holdout_cut(end)))
    return out


def build_task(config, split="train", model_dir=".", frame=None,
               state_mode=None, validate_on="holdout"):
    """`(Task, StreamArrays)` for `config` (a DataConfig); split train/eval.

    A vocabulary or normalisation saved in `model_dir` is used when present;
    nothing is written (see `save_task_files`). `frame`: a pandas DataFrame
    read instead of `config.csv_file` (see `frame_task`). `state_mode=
    "windows"` (train split, text/csv): one lane per stream, for windows
    drawn from anywhere in it (`pipelines.windows_dataset`).
    `validate_on="history"` (train split, text/csv): train on the rows
    before each history's last 10% (`history_split`).
    """
    config = _with_frame(config, frame)
    windows = state_mode == "windows" and split == "train"
    if config.task == "sine":
        task, arrays = sine_task(config, split)
    else:
        task, series = eval_series(config, model_dir, frame)
        if validate_on == "history" and split == "train":
            series = history_split(series)
        source = (tables.DATAFRAME if frame is not None else repr(
            config.text_file if config.task == "text" else config.csv_file))
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


# ------------------------------------------------------------- baselines
def baseline_loss(task, arrays):
    """The naive model's loss: repeat-last-value (MSE) or unigram (xent)."""
    w = arrays.weights
    if task.loss == "xent":
        counts = np.bincount(arrays.inputs.reshape(-1),
                             minlength=task.output_dim) + 1.0
        logp = np.log(counts / counts.sum())
        return float(-(logp[arrays.targets] * w).sum() / w.sum())
    last = arrays.inputs if arrays.last_targets is None else \
        arrays.last_targets
    err = ((arrays.targets - last) ** 2).mean(-1)
    return float((err * w).sum() / w.sum())
