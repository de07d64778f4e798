"""Streams as parallel lanes: a task's `Series` (one per stream) become
`StreamArrays`, `B` lanes of `N` next-step pairs. Lane i is a
concatenation of streams (whole sine signals, or consecutive stretches of
the text/CSV streams); `resets` marks where a stream (or the lane) starts,
so no state flows from one stream into the next, and `weights` is 0 where
there is no target (a missing CSV target, padding). In carry mode batch k is
`lanes[:, kT:(k+1)T]`, so row i of batch k+1 continues row i of batch k.
Windows mode keeps one lane per stream; `--validate_on=history` keeps each
history's last 10% out of training (`history_split`). No TensorFlow here.
"""

import dataclasses
from typing import Optional

import numpy as np

from lstm_ctl.data.readers import holdout_cut


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
class Series:
    """One stream before the lane layout: a CSV entity or file, a text file,
    a sine signal. Next-step pairs are inputs[t] -> targets[t + 1]."""
    name: str              # the id value, the file's base name, or "0", "1"
    inputs: np.ndarray     # [L, D] float32 normalised, or [L] int32 ids
    targets: np.ndarray    # [L, O] float32 normalised, or [L] int32 ids
    weights: np.ndarray    # [L] float32: 0 where row t's target is missing
    times: list            # [L] time cells as written (str), or row indices
    cut: int               # rows [0, cut): history (train); [cut, L): hold-out
    # csv, --target_transform=changes: [L, O] the target levels in data
    # units (missing rows filled forward); targets then hold the changes.
    levels: Optional[np.ndarray] = None


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


def history_split(series):
    """`--validate_on=history`: each stream cut to its history [0, cut),
    whose own last 10% becomes the rows validation scores; training reads
    only the rows before them, and never the hold-out."""
    out = []
    for s in series:
        end = max(s.cut, 2)
        out.append(Series(s.name, s.inputs[:end], s.targets[:end],
                          s.weights[:end], s.times[:end], holdout_cut(end),
                          None if s.levels is None else s.levels[:end]))
    return out
