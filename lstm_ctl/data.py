"""Tasks and their tf.data pipelines, laid out as parallel streams for TBPTT.

Every task becomes `StreamArrays`: `B` lanes of `N` steps. Lane i is a
concatenation of whole streams (signals, or segments of a file); `resets`
marks where a stream starts, `weights` is 0 where the next-step target would
belong to the next stream. In carry mode batch k is `lanes[:, kT:(k+1)T]`,
so row i of batch k+1 continues row i of batch k; in reset mode the chunks
are shuffled and every chunk starts from the initial state.
"""

import csv
import dataclasses
import json
import math
import os
from typing import List, Optional

import numpy as np
import tensorflow as tf

SINE_LANE_STEPS = {"train": 20000, "eval": 4000}
HOLDOUT_FRACTION = 0.1          # text and csv: the tail of the file is eval
VOCAB_FILE = "vocab.json"
NORM_FILE = "normalization.json"


@dataclasses.dataclass
class StreamArrays:
    """`B` lanes of `N` steps: inputs, next-step targets, resets, weights."""
    inputs: np.ndarray      # [B, N, D] float32, or [B, N] int32 (text ids)
    targets: np.ndarray     # [B, N, O] float32, or [B, N] int32 (text ids)
    resets: np.ndarray      # [B, N] bool: a stream starts at this step
    weights: np.ndarray     # [B, N] float32: 0 where no target in-stream

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
    norm: Optional[dict] = None       # csv: column names, means, stds


# --------------------------------------------------------------- layouts
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


def split_series(series, lanes, name):
    """Cuts one long series `[L, ...]` into `lanes` contiguous segments."""
    steps = len(series) // lanes
    if steps < 2:
        raise ValueError(
            f"{name} has {len(series)} steps, too few for {lanes} parallel "
            f"streams (batch_size={lanes}): each stream needs at least 2 "
            "steps. Use a smaller --batch_size or more data.")
    values = series[:steps * lanes].reshape((lanes, steps) + series.shape[1:])
    starts = np.zeros((lanes, steps), bool)
    starts[:, 0] = True
    return values, starts


def next_step_arrays(values, starts, targets_of=lambda v: v):
    """Inputs at t, targets at t+1, masked where t+1 starts a new stream."""
    inputs = values[:, :-1]
    targets = targets_of(values)[:, 1:]
    resets = starts[:, :-1]
    weights = (~starts[:, 1:]).astype(np.float32)
    return StreamArrays(inputs, targets, resets, weights)


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


def sine_task(config, split):
    seed = config.seed if split == "train" else config.seed + 1_000_003
    values, starts = lanes_from_streams(
        sine_streams(seed), config.batch_size, SINE_LANE_STEPS[split] + 1)
    task = Task("sine", 1, 1, "mse", "rmse", "repeat-last-value")
    return task, next_step_arrays(values, starts)


def read_text(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"--text_file {path!r} does not exist.")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"--text_file {path!r} is not UTF-8: invalid byte "
                         f"at offset {e.start} (line {line}).") from None
    if not text:
        raise ValueError(f"--text_file {path!r} is empty.")
    return text


def text_task(config, split, model_dir):
    text = read_text(config.text_file)
    vocab_path = os.path.join(model_dir, VOCAB_FILE)
    if os.path.exists(vocab_path):
        vocab = _read_json(vocab_path)
    else:
        vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise ValueError(f"--text_file {config.text_file!r} has characters "
                         f"that are not in {vocab_path}: {unknown[:10]}")
    ids = np.array([index[ch] for ch in text], np.int32)
    ids = _holdout(ids, split)
    values, starts = split_series(ids, config.batch_size,
                                  f"the {split} part of {config.text_file!r}")
    task = Task("text", len(vocab), len(vocab), "xent", "bpc", "unigram",
                vocab=vocab)
    return task, next_step_arrays(values, starts)


def read_csv(path, target_columns):
    if not os.path.exists(path):
        raise FileNotFoundError(f"--csv_file {path!r} does not exist.")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"--csv_file {path!r} is empty.")
    header, body = rows[0], rows[1:]
    missing = [c for c in target_columns if c not in header]
    if missing:
        raise ValueError(f"--csv_file {path!r} has no column(s) {missing}; "
                         f"its columns are {header}.")
    data = np.empty((len(body), len(header)), np.float64)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {r + 2} has {len(row)} cells, the"
                             f" header has {len(header)}.")
        for c, cell in enumerate(row):
            try:
                data[r, c] = float(cell)
            except ValueError:
                raise ValueError(f"{path}: line {r + 2}, column "
                                 f"{header[c]!r}: {cell!r} is not a number."
                                 ) from None
            if not math.isfinite(data[r, c]):
                raise ValueError(f"{path}: line {r + 2}, column "
                                 f"{header[c]!r}: {cell!r} is not finite.")
    return header, data


def csv_task(config, split, model_dir):
    header, data = read_csv(config.csv_file, config.target_columns)
    norm_path = os.path.join(model_dir, NORM_FILE)
    if os.path.exists(norm_path):
        norm = _read_json(norm_path)
    else:
        train = _holdout(data, "train")
        std = train.std(0)
        norm = {"columns": header, "mean": train.mean(0).tolist(),
                "std": np.where(std > 0, std, 1.0).tolist()}
    if norm["columns"] != header:
        raise ValueError(f"--csv_file {config.csv_file!r} has columns "
                         f"{header}, the model was trained on "
                         f"{norm['columns']} ({norm_path}).")
    scaled = ((data - np.array(norm["mean"])) / np.array(norm["std"])
              ).astype(np.float32)
    target_idx = [header.index(c) for c in config.target_columns]
    values, starts = split_series(_holdout(scaled, split), config.batch_size,
                                  f"the {split} part of {config.csv_file!r}")
    task = Task("csv", len(header), len(target_idx), "mse", "mae",
                "repeat-last-value", norm=dict(norm, targets=target_idx))
    return task, next_step_arrays(values, starts,
                                  lambda v: v[..., target_idx])


def _holdout(series, split):
    cut = len(series) - max(1, int(len(series) * HOLDOUT_FRACTION))
    return series[:cut] if split == "train" else series[cut:]


def _read_json(path):
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


def save_task_files(task, model_dir):
    """Writes what evaluation needs to read the data as training did: the
    vocabulary (text) or the normalisation statistics (csv)."""
    if task.vocab is not None:
        _write_json(os.path.join(model_dir, VOCAB_FILE), task.vocab)
    if task.norm is not None:
        norm = {k: task.norm[k] for k in ("columns", "mean", "std")}
        _write_json(os.path.join(model_dir, NORM_FILE), norm)


def _write_json(path, value):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def build_task(config, split="train", model_dir="."):
    """`(Task, StreamArrays)` for `config` (a DataConfig); split train/eval.

    A vocabulary or normalisation saved in `model_dir` is used when present;
    nothing is written (see `save_task_files`).
    """
    if config.task == "sine":
        task, arrays = sine_task(config, split)
    elif config.task == "text":
        task, arrays = text_task(config, split, model_dir)
    elif config.task == "csv":
        task, arrays = csv_task(config, split, model_dir)
    else:
        raise ValueError(f"unknown task {config.task!r}")
    if arrays.steps < config.seq_len:
        raise ValueError(
            f"the {split} data of task {config.task!r} gives each of the "
            f"{config.batch_size} parallel streams {arrays.steps} steps, "
            f"fewer than one chunk of --seq_len={config.seq_len}. Use a "
            "smaller --seq_len or --batch_size, or more data.")
    return task, arrays


# ------------------------------------------------------------- baselines
def baseline_loss(task, arrays):
    """The naive model's loss: repeat-last-value (MSE) or unigram (xent)."""
    w = arrays.weights
    if task.loss == "xent":
        counts = np.bincount(arrays.inputs.reshape(-1),
                             minlength=task.output_dim) + 1.0
        logp = np.log(counts / counts.sum())
        return float(-(logp[arrays.targets] * w).sum() / w.sum())
    last = arrays.inputs
    if task.norm is not None:
        last = last[..., task.norm["targets"]]
    err = ((arrays.targets - last) ** 2).mean(-1)
    return float((err * w).sum() / w.sum())


# ------------------------------------------------------------- pipelines
def _features(task):
    if task.loss == "xent":
        return lambda ids: tf.one_hot(ids, task.input_dim, dtype=tf.float32)
    return lambda x: x


def _constants(arrays):
    return {k: tf.constant(getattr(arrays, k))
            for k in ("inputs", "targets", "resets", "weights")}


def stream_dataset(task, arrays, seq_len, repeat=True):
    """Carry-mode batches: batch k is every lane's chunk k, `[B, T, ...]`.

    The first batch of each pass starts every lane's first stream, so a
    repeat also resets the state.
    """
    chunks = arrays.steps // seq_len
    tensors = _constants(arrays)
    features = _features(task)

    def chunk(k):
        k = tf.cast(k, tf.int32)
        sl = lambda t: t[:, k * seq_len:(k + 1) * seq_len]  # noqa: E731
        return {"inputs": features(sl(tensors["inputs"])),
                "targets": sl(tensors["targets"]),
                "reset_mask": sl(tensors["resets"]),
                "weights": sl(tensors["weights"])}

    ds = tf.data.Dataset.range(chunks)
    if repeat:
        ds = ds.repeat()
    return ds.map(chunk).prefetch(2)


def shuffled_dataset(task, arrays, seq_len, seed):
    """Reset-mode batches: chunks from any lane and place, shuffled."""
    chunks = arrays.steps // seq_len
    lanes = arrays.lanes
    tensors = _constants(arrays)
    features = _features(task)
    first = tf.one_hot(0, seq_len, on_value=True, off_value=False)

    def example(i):
        i = tf.cast(i, tf.int32)
        lane, k = i // chunks, i % chunks
        sl = lambda t: t[lane, k * seq_len:(k + 1) * seq_len]  # noqa: E731
        return {"inputs": features(sl(tensors["inputs"])),
                "targets": sl(tensors["targets"]),
                "reset_mask": tf.logical_or(sl(tensors["resets"]), first),
                "weights": sl(tensors["weights"])}

    return (tf.data.Dataset.range(lanes * chunks)
            .shuffle(lanes * chunks, seed=seed, reshuffle_each_iteration=True)
            .repeat().map(example).batch(lanes, drop_remainder=True)
            .prefetch(2))


def train_dataset(task, arrays, seq_len, state_mode, seed):
    if state_mode == "carry":
        return stream_dataset(task, arrays, seq_len)
    return shuffled_dataset(task, arrays, seq_len, seed)


# ===================================================================
# provisional: replaced by the data layer's implementation
# (Series, eval_series, denormalize as the data layer will provide them,
# for today's data: one text or CSV file = one stream named after the
# file's base name; sine: the eval-seed signals, cut at half.)
@dataclasses.dataclass
class Series:
    """One stream before the lane layout: a CSV entity or file, a text file,
    a sine signal. Next-step pairs are inputs[t] -> targets[t + 1]."""
    name: str              # the file's base name, or "0", "1", ... (sine)
    inputs: np.ndarray     # [L, D] float32 normalised, or [L] int32 ids
    targets: np.ndarray    # [L, O] float32 normalised, or [L] int32 ids
    weights: np.ndarray    # [L] float32: 0 where row t's target is missing
    times: list            # [L] the time column's value, or the row index
    cut: int               # rows [0, cut) history, rows [cut, L) hold-out


def eval_series(config, model_dir):
    """(Task, List[Series]) for evaluation, with the vocabulary /
    normalisation saved in model_dir."""
    d = config.data if hasattr(config, "data") else config
    if d.task == "sine":
        task = Task("sine", 1, 1, "mse", "rmse", "repeat-last-value")
        signals = sine_streams(d.seed + 1_000_003)
        values = [next(signals) for _ in range(d.batch_size)]
        names = [str(i) for i in range(len(values))]
        cuts = [len(v) // 2 for v in values]
        targets = values
    elif d.task == "text":
        text = read_text(d.text_file)
        task, _ = text_task(_one_lane(d), "train", model_dir)
        index = {ch: i for i, ch in enumerate(task.vocab)}
        values = [np.array([index[ch] for ch in text], np.int32)]
        targets, names = values, [_base_name(d.text_file)]
        cuts = [_holdout_cut(len(text))]
    elif d.task == "csv":
        header, raw = read_csv(d.csv_file, d.target_columns)
        task, _ = csv_task(_one_lane(d), "train", model_dir)
        norm = task.norm
        scaled = ((raw - np.array(norm["mean"])) / np.array(norm["std"])
                  ).astype(np.float32)
        values, targets = [scaled], [scaled[:, norm["targets"]]]
        names, cuts = [_base_name(d.csv_file)], [_holdout_cut(len(raw))]
    else:
        raise ValueError(f"unknown task {d.task!r}")
    task.input_columns = task.norm["columns"] if task.norm else None
    task.target_columns = (list(d.target_columns) if task.norm else None)
    series = [Series(name, v, t, np.ones(len(v), np.float32),
                     list(range(len(v))), cut)
              for name, v, t, cut in zip(names, values, targets, cuts)]
    return task, series


def denormalize(task, y):
    """[..., O] normalised target values -> data units (identity for sine)."""
    if task.norm is None:
        return np.asarray(y)
    idx = task.norm["targets"]
    return (np.asarray(y) * np.array(task.norm["std"])[idx]
            + np.array(task.norm["mean"])[idx])


def _one_lane(d):
    return dataclasses.replace(d, batch_size=1)


def _base_name(path):
    return os.path.basename(path)


def _holdout_cut(length):
    return length - max(1, int(length * HOLDOUT_FRACTION))
# end of provisional block
# ===================================================================
