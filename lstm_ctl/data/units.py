"""A served model's units: what a client sends and gets back, per task.

Serving speaks the task's units, not the model's: csv inputs and outputs in
data units (the run's normalisation.json applied inside), sine values as
they are, text characters in and next-character probabilities out (the
run's vocab.json). A csv run trained on the changes of its targets still
speaks levels: each row's target columns become changes against the level
before them (the stream's last known level, which the server keeps), and
forecast changes are summed back onto the row's level. The task itself
comes from the run dir (`task_classes.from_run`). No TensorFlow here.
"""

import math

import numpy as np

from lstm_ctl.data import transforms


FLOAT32_MAX = float(np.finfo(np.float32).max)


class UnitsError(ValueError):
    """A request's rows are not in the served task's units; the message
    says what was expected."""


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
        # A changes run: where each target column is in a request row; the
        # level a stream keeps has one value per target column.
        self.changes = transforms.is_changes(task)
        self.level_dim = task.output_dim if self.changes else 0
        self._level_at = ([task.input_columns.index(c)
                           for c in task.target_columns]
                          if self.changes else None)

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
            if self.changes:
                out.update(target_transform="changes", outputs=(
                    "next row of target_columns, data units (the forecast "
                    "change summed onto the row's level)"))
        else:
            out.update(inputs="one value per timestep",
                       outputs="the next value")
        return out

    def encode(self, rows, level=None):
        """Request rows -> `[k, D]` float32 model inputs (normalised or
        one-hot); raises UnitsError naming the problem. A changes run: the
        target columns of row 0 become changes against `level` (`[O]`, the
        stream's last known level; None or NaN: unknown, a change of 0, as
        for the first row of a stream in training), those of each later row
        against the row before."""
        if self._index is not None:
            return self._encode_text(rows)
        out = self.read(rows)
        if self.changes:
            out = out.copy()
            known = np.full(self.level_dim, np.nan) if level is None \
                else np.asarray(level, np.float64)
            change = transforms.changes(np.concatenate(
                [known[None], self.levels_of(out)]))[1:]
            out[:, self._level_at] = np.nan_to_num(change, nan=0.0)
        if self.task.norm is not None:
            out = (out - self._mean) / self._std
            if not (np.abs(out) <= FLOAT32_MAX).all():
                raise UnitsError("\"inputs\" holds a value too large for "
                                 "float32 once normalised.")
        return out.astype(np.float32)

    def levels_of(self, rows):
        """A changes run: `[k, O]` float64, the target columns' levels of
        `[k, D]` rows read in data units (`read`)."""
        return np.asarray(rows, np.float64)[:, self._level_at]

    def read(self, rows):
        """Request rows of numbers -> `[k, D]` float64, checked, in data
        units; raises UnitsError naming the problem."""
        if isinstance(rows, np.ndarray):  # read already (the server)
            if rows.ndim == 2 and rows.shape[1] == self.input_dim and \
                    len(rows) and (np.abs(rows) <= FLOAT32_MAX).all():
                return rows.astype(np.float64)
            rows = rows.tolist()
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
        return np.array(rows, np.float64)

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

    def decode(self, y, levels=None):
        """`[k, O]` model outputs -> rows in the task's units (lists). A
        changes run: each forecast change is summed onto `levels` `[k, O]`,
        the level of the row it followed."""
        y = np.asarray(y, np.float64)
        if self._index is not None:
            e = np.exp(y - y.max(-1, keepdims=True))
            y = e / e.sum(-1, keepdims=True)
        else:
            y = transforms.denormalize(self.task, y)
        if self.changes:
            y = np.asarray(levels, np.float64) + y
        return np.asarray(y, np.float64).tolist()
