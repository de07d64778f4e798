"""A served model's units: what a client sends and gets back, per task.

Serving speaks the task's units, not the model's: csv inputs and outputs in
data units (the run's normalisation.json applied inside), sine values as
they are, text characters in and next-character probabilities out (the
run's vocab.json). Everything is rebuilt from the run dir's config.json and
task files, without reading the training data. No TensorFlow here.
"""

import math
import os

import numpy as np

from lstm_ctl.data import tasks
from lstm_ctl.data.readers import read_json


FLOAT32_MAX = float(np.finfo(np.float32).max)


class UnitsError(ValueError):
    """A request's rows are not in the served task's units; the message
    says what was expected."""


def served_task(config, model_dir):
    """The `tasks.Task` of a run, from config.json and its saved task files
    (vocab.json for text, normalization.json for csv)."""
    d = getattr(config, "data", config)
    if d.task == "sine":
        return tasks.Task("sine", 1, 1, "mse", "rmse", "repeat-last-value")
    if d.task == "text":
        path = os.path.join(model_dir, tasks.VOCAB_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} not found: a text run dir holds the vocabulary "
                "train.py saved; serving needs it to map characters.")
        vocab = read_json(path)
        return tasks.Task("text", len(vocab), len(vocab), "xent", "bpc",
                          "unigram", vocab=vocab)
    if d.task == "csv":
        path = os.path.join(model_dir, tasks.NORM_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} not found: a csv run dir holds the normalisation "
                "train.py saved; serving needs it to read data units.")
        norm = read_json(path)
        if norm.get("transform", "levels") != "levels":
            raise ValueError(
                f"{model_dir} was trained on the changes of its targets "
                f"(--target_transform={norm['transform']}, config.json); "
                "serving answers in levels and does not yet sum changes "
                "back per session: train with --target_transform=levels to "
                "serve it, or forecast it with evaluate.py --forecast=H "
                "--forecast_csv=PATH (in data units).")
        inputs, targets = list(d.input_columns), list(d.target_columns)
        columns = inputs + [c for c in targets if c not in inputs]
        if norm["columns"] != columns:
            raise ValueError(
                f"{path} has columns {norm['columns']} but config.json "
                f"names inputs {inputs} and targets {targets}.")
        return tasks.Task("csv", len(inputs), len(targets), "mse", "mae",
                          "repeat-last-value",
                          norm=dict(norm, targets=[columns.index(c)
                                                   for c in targets]),
                          input_columns=inputs, target_columns=targets)
    raise ValueError(f"unknown task {d.task!r}")


class Units:
    """Converts a request's rows to model inputs and outputs back."""

    def __init__(self, task):
        self.task = task
        self.input_dim, self.output_dim = task.input_dim, task.output_dim
        self._index = ({ch: i for i, ch in enumerate(task.vocab)}
                       if task.vocab is not None else None)
        if task.norm is not None:
            n = task.input_dim
            self._mean = np.array(task.norm["mean"][:n], np.float64)
            self._std = np.array(task.norm["std"][:n], np.float64)

    def describe(self):
        """What a client needs to know: the task, the row layouts."""
        t = self.task
        out = {"task": t.name, "input_dim": t.input_dim,
               "output_dim": t.output_dim}
        if t.vocab is not None:
            out.update(vocab=t.vocab, inputs="one character per row",
                       outputs="next-character probabilities, vocab order")
        elif t.norm is not None:
            out.update(input_columns=t.input_columns,
                       target_columns=t.target_columns,
                       inputs="one row of input_columns per timestep, data "
                              "units",
                       outputs="next row of target_columns, data units")
        else:
            out.update(inputs="one value per timestep",
                       outputs="the next value")
        return out

    def encode(self, rows):
        """Request rows -> `[k, D]` float32 model inputs (normalised or
        one-hot); raises UnitsError naming the problem."""
        if self._index is not None:
            return self._encode_text(rows)
        if not isinstance(rows, list) or not rows:
            raise UnitsError(
                "\"inputs\" must be a non-empty list of rows (one per "
                f"timestep), each a list of {self.input_dim} number(s).")
        for t, row in enumerate(rows):  # plain Python: rows are short
            if not isinstance(row, list) or len(row) != self.input_dim:
                got = (f"{len(row)} values" if isinstance(row, list)
                       else type(row).__name__)
                raise UnitsError(
                    f"row {t} of \"inputs\" must be a list of "
                    f"{self.input_dim} number(s) (features); got {got}.")
            for k, v in enumerate(row):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise UnitsError(f"row {t}, feature {k} of \"inputs\" "
                                     f"is not a number: {v!r}.")
                if not math.isfinite(v):
                    raise UnitsError(f"row {t}, feature {k} of \"inputs\" "
                                     "is NaN or infinity.")
                if abs(v) > FLOAT32_MAX:
                    raise UnitsError(f"row {t}, feature {k} of \"inputs\" "
                                     "is too large for float32.")
        out = np.array(rows, np.float64)
        if self.task.norm is not None:
            out = (out - self._mean) / self._std
            if not (np.abs(out) <= FLOAT32_MAX).all():
                raise UnitsError("\"inputs\" holds a value too large for "
                                 "float32 once normalised.")
        return out.astype(np.float32)

    def _encode_text(self, rows):
        if isinstance(rows, str):
            chars = list(rows)
        elif isinstance(rows, list):
            chars = [r[0] if isinstance(r, list) and len(r) == 1 else r
                     for r in rows]
        else:
            chars = None
        if not chars or not all(isinstance(c, str) and len(c) == 1
                                for c in chars):
            raise UnitsError(
                "\"inputs\" must be a non-empty string (one character per "
                "timestep) or a list of one-character strings.")
        unknown = sorted(set(chars) - set(self._index))
        if unknown:
            raise UnitsError(f"\"inputs\" has characters that are not in "
                             f"the model's vocabulary: {unknown[:10]}")
        out = np.zeros([len(chars), self.input_dim], np.float32)
        out[np.arange(len(chars)), [self._index[c] for c in chars]] = 1.0
        return out

    def decode(self, y):
        """`[k, O]` model outputs -> rows in the task's units (lists)."""
        y = np.asarray(y, np.float64)
        if self._index is not None:
            e = np.exp(y - y.max(-1, keepdims=True))
            y = e / e.sum(-1, keepdims=True)
        else:
            y = tasks.denormalize(self.task, y)
        return np.asarray(y, np.float64).tolist()
