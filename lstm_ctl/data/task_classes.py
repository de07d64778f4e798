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
from lstm_ctl.data.task_base import (  # noqa: F401
    NORM_FILE, STREAMS_FILE, VOCAB_FILE, Task, _fmt)


@dataclasses.dataclass
class SineTask(Task):
    """The built-in signals: one value per step, as it is."""

    name = "sine"
    metric = "rmse"
    baseline_name = "repeat-last-value"
    input_dim = output_dim = 1

    @classmethod
    def from_run(cls, data, model_dir):
        return cls()


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

    @classmethod
    def from_run(cls, data, model_dir):
        return cls(cls._saved(model_dir, VOCAB_FILE, "vocabulary",
                              "map characters"))


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

    @classmethod
    def from_run(cls, data, model_dir):
        norm = cls._saved(model_dir, NORM_FILE, "normalisation",
                          "read data units")
        transform = norm.get("transform", "levels")
        inputs, targets = list(data.input_columns), list(data.target_columns)
        unseen = [c for c in targets if c not in inputs]
        if transform != "levels" and unseen:
            raise ValueError(
                f"{model_dir} was trained on the changes of its targets "
                f"(--target_transform={transform}), and target column(s) "
                f"{unseen} are not input columns: a request row would not "
                "hold their levels to sum the forecast changes onto. Train "
                "with the targets among --input_columns, or with "
                "--target_transform=levels, to serve it.")
        columns = inputs + [c for c in targets if c not in inputs]
        if norm["columns"] != columns:
            raise ValueError(
                f"{os.path.join(model_dir, NORM_FILE)} has columns "
                f"{norm['columns']} but config.json "
                f"names inputs {inputs} and targets {targets}.")
        return cls(inputs, targets,
                   norm=dict(norm, targets=[columns.index(c)
                                            for c in targets]),
                   transform=transform)


TASKS = {cls.name: cls for cls in (SineTask, TextTask, CsvTask)}


def task_class(name):
    """The class of `--task=name`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}")
    return TASKS[name]


def from_run(config, model_dir):
    """The task of a run (a `SineTask`, `TextTask` or `CsvTask`), from
    config.json's settings (`config`: a TrainConfig or its DataConfig) and
    the task files `Task.save` wrote in `model_dir` (vocab.json for text,
    normalization.json for csv), without reading the training data."""
    data = getattr(config, "data", config)
    return task_class(data.task).from_run(data, model_dir)
