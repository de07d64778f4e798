"""The base of the task classes (task_classes.py): what every task has
and the files a run dir holds for it. TensorFlow is imported inside the
methods that build tensors, never at import (readers and the config use
this module before TensorFlow starts).
"""

import os

import numpy as np

from lstm_ctl import files
from lstm_ctl.data import transforms
from lstm_ctl.data.readers import read_json

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
    @staticmethod
    def _saved(model_dir, name, holds, needs):
        """The JSON file `name` that `save` wrote in `model_dir`; a clear
        error when it is missing."""
        path = os.path.join(model_dir, name)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} not found: a run dir holds the {holds} train.py "
                f"saved; serving needs it to {needs}.")
        return read_json(path)

    @classmethod
    def from_run(cls, data, model_dir):
        """This task of a run, from its DataConfig `data` and the files
        `save` wrote in `model_dir` (see `task_classes.from_run`)."""
        raise NotImplementedError

    def save(self, model_dir):
        """Writes what evaluation and serving need to read the data as
        training did (nothing for a built-in task)."""
        if self.streams is not None:
            files.write_json(os.path.join(model_dir, STREAMS_FILE),
                             self.streams)


