"""The task classes: what a task is, apart from how its data is read
(tasks.py). Each class owns its features (input and output width), its
loss and metric, its naive baseline, the dtype of its lanes and targets,
how model outputs become what a user reads (characters, data units), what
a roll-out feeds back as the next input, the files it saves in a run dir,
and the names of its CSV and figure columns. So no module outside `data/`
asks which task it holds.

- `SineTask`: one value per step; MSE, metric rmse; repeat-last-value.
- `TextTask`: characters as ids (inputs one-hot); cross-entropy, metric bits
  per character; the unigram distribution.
- `CsvTask`: the input and target columns of a table, normalised (and
  maybe their changes, transforms.py); MSE, metric mae in data units;
  repeat-last-value.

`TASKS` maps a `--task` name to its class; the class attributes
`file_flag`, `reads_file`, `has_columns` and `unit_name` answer what the
config code asks before any data is read. TensorFlow is imported inside
the methods that build tensors, never at import (readers and the config
use this module before TensorFlow starts).
"""

import dataclasses
import math
import os
from typing import List, Optional

import numpy as np

from lstm_ctl import files
from lstm_ctl.data import transforms

VOCAB_FILE = "vocab.json"
NORM_FILE = "normalization.json"
STREAMS_FILE = "streams.json"


def _fmt(v):
    return f"{float(v):.7g}"


class Task:
    """What every task has. Subclasses set the class attributes and the
    methods that differ; the attributes that a task does not have are None
    (`vocab` of a CSV task, `norm` of a text task)."""

    name = None             # the --task value
    metric = None           # "rmse", "bpc" or "mae": the key of its score
    baseline_name = None    # the naive baseline, as reports name it
    file_flag = None        # the flag naming its data file (None: built in)
    reads_file = False      # its data comes from the user's files: training
    #                         reads the history of the streams evaluation
    #                         scores (so --validate_on=history applies)
    has_columns = False     # a table of named columns (CSV): its targets
    #                         may be their changes, its time column has a
    #                         season, a short one trains in windows mode
    unit_name = "rows"      # what a stream's steps are called
    numeric = True          # outputs are values (forecasts have an RMSE)
    lane_dtype = np.float32  # the lanes' inputs and targets
    default_warmup = "history"  # evaluate.py's --warmup when not given
    vocab = norm = input_columns = target_columns = streams = None
    transform = "levels"

    # --------------------------------------------------------- features
    def model_inputs(self, x):
        """Lane inputs -> the model's inputs `[..., D]` float32 (tensors
        as they are)."""
        import tensorflow as tf
        return x if tf.is_tensor(x) else tf.constant(x, tf.float32)

    def target_spec(self):
        """The `tf.TensorSpec` of a batch's targets, `[B, T, O]`."""
        import tensorflow as tf
        return tf.TensorSpec([None, None, self.output_dim], tf.float32)

    # ------------------------------------------------------------- loss
    def step_loss(self, outputs, targets):
        """`[B, T]` the loss of each step: the mean squared error over the
        target features."""
        import tensorflow as tf
        err = outputs - tf.cast(targets, outputs.dtype)
        return tf.reduce_mean(tf.square(err), axis=-1)

    def metric_sum(self, outputs, targets, weights):
        """The weighted sum behind the metric where it is not a function
        of the mean loss (CSV's mae); otherwise 0."""
        import tensorflow as tf
        return tf.zeros([], outputs.dtype)

    def metric_value(self, loss, metric_sum, count, sqrt):
        """The metric from the mean loss (or the metric's sum and the
        count); `sqrt` is math.sqrt or tf.sqrt."""
        return sqrt(loss)

    # --------------------------------------------------------- baseline
    def baseline_loss(self, arrays):
        """The naive model's loss on `StreamArrays`: repeat the last
        value."""
        err = ((arrays.targets - self._last(arrays)) ** 2).mean(-1)
        w = arrays.weights
        return float((err * w).sum() / w.sum())

    @staticmethod
    def _last(arrays):
        return (arrays.inputs if arrays.last_targets is None
                else arrays.last_targets)

    def naive_after(self, s):
        """`[L, O]` float32: row t is the naive forecast made after row t
        of stream `s`: its last observed target up to t (a changes run: no
        change)."""
        if transforms.is_changes(self):
            return np.tile(transforms.zero_change(self), (len(s.targets), 1))
        seen = np.where(s.weights > 0, np.arange(len(s.weights)), 0)
        return s.targets[np.maximum.accumulate(seen)].astype(np.float32)

    def naive_outputs(self, series, spans):
        """The naive outputs of the steps that predict rows [a, b) of each
        stream (`spans`), one `[b - a, O]` each."""
        return [self.naive_after(s)[a - 1:b - 1]
                for s, (a, b) in zip(series, spans)]

    # ----------------------------------------------- outputs and values
    def feedback(self):
        """Maps outputs `[B, O]` to the next inputs `[B, D]` in a
        roll-out: the outputs themselves."""
        return lambda y: y

    def path_values(self, series, values, starts):
        """A roll-out's outputs `[B, H, O]` (rows from `starts[i]` on of
        stream i) -> what the user reads: data units."""
        return transforms.path_levels(self, series, values, starts)

    @property
    def columns(self):
        """The names of the `column` of the CSVs and the figure's
        panels."""
        return ["value"]

    def actual_cells(self, s, a, b):
        """Rows [a, b) of stream `s`'s targets as CSV cells, one list per
        row."""
        return [[_fmt(v) for v in r]
                for r in transforms.actual_levels(self, s, a, b)]

    def output_cells(self, s, outputs, a):
        """One-step outputs for rows [a, a + n) of stream `s` as CSV cells
        (data units)."""
        return [[_fmt(v) for v in r]
                for r in transforms.step_levels(self, s, outputs, a)]

    def future_cells(self, output):
        """One step `[O]` of `path_values` as CSV cells, one per column."""
        return [_fmt(v) for v in output]

    def figure_lines(self, s, a, n, c, carry, reset, history):
        """`(ylabel, [(label, rows, values)])`: the lines of column `c` of
        stream `s` over the first `n` hold-out rows (from row `a`): the
        actual values from `history` rows before the hold-out (a gap where
        a target is missing), the one-step predictions carried and
        reset."""
        rows = np.arange(a, a + n)
        h0 = max(a - history, 0)
        actual = transforms.actual_levels(self, s, h0, a + n)[:, c]
        # a gap in the line where the target is missing, not a value
        actual = np.where(s.weights[h0:a + n] > 0, actual, np.nan)
        return self.columns[c], [
            ("actual", np.arange(h0, a + n), actual),
            ("predicted (carry)", rows,
             transforms.step_levels(self, s, carry[:n], a)[:, c]),
            ("predicted (reset)", rows,
             transforms.step_levels(self, s, reset[:n], a)[:, c])]

    # ------------------------------------------------------------ files
    def save(self, model_dir):
        """Writes what evaluation and serving need to read the data as
        training did (nothing for a built-in task)."""
        if self.streams is not None:
            files.write_json(os.path.join(model_dir, STREAMS_FILE),
                             self.streams)


@dataclasses.dataclass
class SineTask(Task):
    """The built-in signals: one value per step, as it is."""

    name = "sine"
    metric = "rmse"
    baseline_name = "repeat-last-value"
    input_dim = output_dim = 1


@dataclasses.dataclass
class TextTask(Task):
    """Characters: ids in the lanes (one-hot into the model), logits out."""

    vocab: List[str] = dataclasses.field()   # required (not Task's None)
    streams: Optional[List[dict]] = None   # name, rows, held-out rows

    name = "text"
    metric = "bpc"
    baseline_name = "unigram"
    file_flag = "text_file"
    reads_file = True
    unit_name = "characters"
    numeric = False
    lane_dtype = np.int32

    @property
    def input_dim(self):
        return len(self.vocab)

    output_dim = input_dim

    def model_inputs(self, x):
        import tensorflow as tf
        return tf.one_hot(x, self.input_dim, dtype=tf.float32)

    def target_spec(self):
        import tensorflow as tf
        return tf.TensorSpec([None, None], tf.int32)

    def step_loss(self, outputs, targets):
        """`[B, T]` cross-entropy in nats of the next character's id."""
        import tensorflow as tf
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(targets, tf.int32), logits=outputs)

    def metric_value(self, loss, metric_sum, count, sqrt):
        return loss / math.log(2.0)   # bits per character

    def baseline_loss(self, arrays):
        """The unigram distribution of the lanes' inputs."""
        w = arrays.weights
        counts = np.bincount(arrays.inputs.reshape(-1),
                             minlength=self.output_dim) + 1.0
        logp = np.log(counts / counts.sum())
        return float(-(logp[arrays.targets] * w).sum() / w.sum())

    def unigram(self, series):
        """`[V]` float32 log-probabilities of the characters of the
        streams' histories (add-one smoothed)."""
        ids = np.concatenate([s.inputs[:max(s.cut - 1, 1)] for s in series])
        counts = np.bincount(ids, minlength=self.output_dim) + 1.0
        return np.log(counts / counts.sum()).astype(np.float32)

    def naive_after(self, s):
        raise ValueError("text has no value to repeat; its naive model is "
                         "the unigram distribution (naive_outputs).")

    def naive_outputs(self, series, spans):
        logp = self.unigram(series)
        return [np.tile(logp, (b - a, 1)) for a, b in spans]

    def feedback(self):
        """The most likely character, one-hot."""
        import tensorflow as tf
        return lambda y: tf.one_hot(tf.argmax(y, -1), self.input_dim)

    def path_values(self, series, values, starts):
        return values   # logits: future_cells reads the characters

    @property
    def columns(self):
        return ["char"]

    def actual_cells(self, s, a, b):
        return [[self.vocab[i]] for i in s.targets[a:b]]

    def output_cells(self, s, outputs, a):
        return [[self.vocab[i]] for i in outputs.argmax(-1)]   # argmax

    def future_cells(self, output):
        return [self.vocab[int(output.argmax(-1))]]

    def figure_lines(self, s, a, n, c, carry, reset, history):
        """Bits of the actual next character, carried and reset, over the
        hold-out."""
        rows, lines = np.arange(a, a + n), []
        for out, name in ((carry, "carry"), (reset, "reset")):
            logp = out[:n] - np.log(np.exp(out[:n]).sum(-1, keepdims=True))
            bits = -logp[np.arange(n), s.targets[a:a + n]] / np.log(2)
            lines.append((name, rows, bits))
        return "bits of the next character", lines

    def save(self, model_dir):
        files.write_json(os.path.join(model_dir, VOCAB_FILE), self.vocab)
        super().save(model_dir)


@dataclasses.dataclass
class CsvTask(Task):
    """Columns of a table: normalised inputs in, normalised targets out
    (of a changes run, their changes)."""

    input_columns: List[str] = dataclasses.field()   # required
    target_columns: List[str] = dataclasses.field()
    # "columns" (the inputs, then targets that are not inputs), their
    # "mean" and "std", and "targets" (indices of the targets in "columns").
    norm: Optional[dict] = None
    streams: Optional[List[dict]] = None   # name, rows, held-out rows
    transform: str = "levels"   # or "changes" (data/transforms.py)

    name = "csv"
    metric = "mae"
    baseline_name = "repeat-last-value"
    file_flag = "csv_file"
    reads_file = True
    has_columns = True

    @property
    def input_dim(self):
        return len(self.input_columns)

    @property
    def output_dim(self):
        return len(self.target_columns)

    def metric_sum(self, outputs, targets, weights):
        """The weighted absolute error in data units (the normalisation's
        std), averaged over the target features."""
        import tensorflow as tf
        err = outputs - tf.cast(targets, outputs.dtype)
        std = tf.constant([self.norm["std"][i] for i in self.norm["targets"]],
                          outputs.dtype)
        return tf.reduce_sum(tf.reduce_mean(tf.abs(err) * std, axis=-1)
                             * weights)

    def metric_value(self, loss, metric_sum, count, sqrt):
        return metric_sum / count

    def feedback(self):
        """The predicted target columns that are inputs, in input order. A
        ValueError when some input column is not a target: it has no
        future."""
        import tensorflow as tf
        missing = [c for c in self.input_columns
                   if c not in self.target_columns]
        if missing:
            raise ValueError(
                f"--forecast feeds the model's predictions back as its next "
                f"inputs, so every input column must be a target; input "
                f"column(s) {missing} are not targets {self.target_columns} "
                "and have no future. Train with them in --target_columns to "
                "forecast.")
        idx = [self.target_columns.index(c) for c in self.input_columns]
        return lambda y: tf.gather(y, idx, axis=-1)

    @property
    def columns(self):
        return list(self.target_columns)

    def save(self, model_dir):
        if self.norm is not None:
            norm = {k: self.norm[k] for k in ("columns", "mean", "std")}
            if self.transform != "levels":
                norm["transform"] = self.transform
            files.write_json(os.path.join(model_dir, NORM_FILE), norm)
        super().save(model_dir)


TASKS = {cls.name: cls for cls in (SineTask, TextTask, CsvTask)}


def task_class(name):
    """The class of `--task=name`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}")
    return TASKS[name]
