"""Evaluation: rebuild a run from config.json, restore checkpoints, measure.

One engine: every eval stream (`data.eval_series`: each file or entity;
sine, the eval signals) runs as its own lane over its hold-out, and these
per-step predictions (`forecast.Forecaster.predict`) feed the scores, the
predictions CSV and the figure alike. `carry` carries the state over the
whole hold-out, starting from the state the warm-up left: over the history
(`warmup="history"`), its last N rows (`warmup=N`), or none (`"none"`: the
model's initial state). `reset` restarts every chunk of `seq_len` steps
from the initial state. The difference says whether carrying state pays.
Writing tables, CSV files and figures is report.py's.
"""

import csv
import dataclasses
import glob
import os
import time

import numpy as np
import tensorflow as tf

from lstm_ctl import config as config_lib
from lstm_ctl.run import checkpoints
from lstm_ctl.data import tasks as data
from lstm_ctl.eval import forecast
from lstm_ctl.eval import report
from lstm_ctl.run import holdout
from lstm_ctl.run import summaries
from lstm_ctl.run.builders import build_model


class Evaluator:
    """Evaluates the checkpoints of one model dir on its eval streams.

    `warmup`: "history", "none" or a number of rows N (the last N history
    rows only); None: the task's default. `horizon`: forecast that many
    steps (0: none), which needs an autoregressive task. `data_file`:
    evaluate on this file (a CSV or text file, a directory or a glob with
    the columns the model was trained on) instead of the run's own.
    """

    def __init__(self, model_dir, warmup=None, horizon=0, data_file=None):
        self.model_dir = model_dir
        self.config = config_lib.load(model_dir)
        if data_file:
            self.config = with_data_file(self.config, data_file)
        self.task, self.series = data.eval_series(self.config, model_dir)
        warmup = holdout.parse_warmup(warmup)
        self.warmup = warmup or self.task.default_warmup
        self.horizon = horizon
        if horizon:
            self.task.feedback()  # raises when not autoregressive
        self.model = build_model(self.config, self.task)
        self.forecaster = forecast.Forecaster(self.model, self.task,
                                              self.config.data.seq_len)
        self.last = None  # the last checkpoint's predictions and figure
        self.warnings = []  # lines: numbers that should not be trusted
        self.state_horizon = holdout.load_run_info(model_dir).get(
            "state_horizon")
        self._writers = {}

    @property
    def trace_count(self):
        """How often the compiled forward pass of the hold-out runs was
        traced (`holdout.Runner.trace_count`): once, whatever the number
        of streams, their lengths, the state mode or the checkpoint."""
        return self.forecaster.trace_count

    def restore(self, path):
        """Restores the model from `path`; returns the checkpoint's step."""
        checkpoints.restore_model(self.model, path, self.model_dir)
        return checkpoints.checkpoint_step(path)

    def restore_latest(self, warn):
        """Restores the newest readable checkpoint (older ones stand in for
        a corrupt newest, with a warning); returns its path."""
        return checkpoints.restore_latest(self.restore, self.model_dir,
                                          warn)

    def restore_default(self, warn):
        """Restores the checkpoint evaluated when none is named
        (`checkpoints.restore_default`: the best of a run validated on its
        history, else the newest readable); returns its path."""
        return checkpoints.restore_default(
            self.restore, self.model_dir, self.config.validate_on, warn)

    def predictions(self, eval_steps=0):
        """Hold-out predictions of every stream, `(carry, reset, warm
        state)`: carry from the state the warm-up left (warmup="none": the
        initial state, and `warm state` None)."""
        warm = (None if self.warmup == "none" else
                self.forecaster.warm_up(self.series, warmup=self.warmup))
        carry, reset = self.forecaster.predict(
            self.series, warm, eval_steps * self.config.data.seq_len)
        return carry, reset, warm

    def evaluate(self, state_mode, eval_steps=0, predictions=None):
        """`{"loss", <metric>}` of the current weights in one state mode
        ("carry", "reset", or "naive": the naive baseline) on the first
        `eval_steps` chunks of `seq_len` steps of each stream's hold-out
        (0: all of it), scored from the per-stream `predictions` (computed
        when not given) for every warm-up."""
        max_steps = eval_steps * self.config.data.seq_len
        if state_mode == "naive":
            outputs = holdout.naive_outputs(self.task, self.series,
                                            max_steps)
        else:
            carry, reset, _ = predictions or self.predictions(eval_steps)
            outputs = carry if state_mode == "carry" else reset
        return self.forecaster.score(self.series, outputs, max_steps)

    def carry_is_reset(self, eval_steps=0):
        """Whether carry and reset must give the same numbers: no warm-up,
        and no stream's scored hold-out is longer than one chunk."""
        seq_len = self.config.data.seq_len
        return self.warmup == "none" and all(
            b - a <= seq_len for a, b in holdout.spans(
                self.series, eval_steps * seq_len))

    def warmup_steps(self):
        """The most steps a warm-up runs the state over (0: none)."""
        if self.warmup == "none":
            return 0
        return max([b - a for a, b in holdout.warmup_ranges(
            self.series, self.warmup)] + [0])

    def evaluate_checkpoint(self, path, state_mode="both", eval_steps=0,
                            write_summaries=True, restore=True, step=None):
        """Rows `{checkpoint, step, state_mode, loss, <metric>}` for `path`
        (restored first unless `restore=False`): carry and/or reset, then
        naive (the naive baseline on the same steps); then with a horizon
        the hold-out forecast rows `{..., state_mode: holdout_forecast_carry|
        holdout_forecast_reset|holdout_forecast_naive, horizon, rmse}` (the
        first `horizon` hold-out rows forecast from the end of the history).
        Adds to `self.warnings` what
        should not be trusted. Keeps the predictions, the hold-out forecasts
        and the figure in `self.last`; the figure also goes to TensorBoard.
        `step`: the step of the rows (None: `path`'s)."""
        if restore:
            self.restore(path)
        if step is None:
            step = checkpoints.checkpoint_step(path)
        modes = ("carry", "reset") if state_mode == "both" else (state_mode,)
        predictions = self.predictions(eval_steps)
        rows, scores = [], {}
        for mode in modes + ("naive",):
            values = self.evaluate(mode, eval_steps, predictions)
            scores[mode] = values
            rows.append(dict(checkpoint=path, step=step, state_mode=mode,
                             **values))
            if write_summaries:
                self._writer(mode).scalars(step, values)
        for line in holdout.warnings(
                scores, self.task.baseline_name, self.warmup_steps(),
                self.state_horizon):
            line = f"{path}: {line}"
            if line not in self.warnings:
                self.warnings.append(line)
        carry, reset, warm = predictions
        paths = None
        if self.horizon and self.task.numeric:  # RMSE: numbers only
            rmse, paths = self.forecaster.skill(self.series, self.horizon,
                                                warm)
            rows += [dict(checkpoint=path, step=step, state_mode=name,
                          horizon=self.horizon, rmse=value)
                     for name, value in rmse.items()]
        png = report.figure_png(self.task, self.series, carry, reset, paths,
                                title=f"{path} (step {step})")
        if write_summaries:
            self._writer("").image(step, "predictions", png)
        self.last = dict(carry=carry, reset=reset, png=png, paths=paths,
                         max_steps=eval_steps * self.config.data.seq_len)
        for w in self._writers.values():
            w.flush()
        return rows

    def write_outputs(self, predictions_csv=None, forecast_csv=None,
                      plot=None):
        """Files of the last evaluated checkpoint: the hold-out predictions,
        the future forecast (after each whole series), the figure. Returns
        paths."""
        written = []
        if predictions_csv:
            report.write_csv(predictions_csv, report.PREDICTION_HEADER,
                             report.prediction_rows(
                                 self.task, self.series, self.last["carry"],
                                 self.last["reset"], self.last["max_steps"]))
            written.append(predictions_csv)
        if forecast_csv:
            values = self.forecaster.forecast(self.series, self.horizon)
            report.write_csv(forecast_csv, report.FORECAST_HEADER,
                             report.forecast_rows(self.task, self.series,
                                                  values))
            written.append(forecast_csv)
        if plot:
            with open(plot, "wb") as f:
                f.write(self.last["png"])
            written.append(plot)
        return written

    def _writer(self, mode):
        """The writer of run `eval/<warmup>/<mode>` (mode "": run
        `eval/<warmup>`), e.g. `eval/history/carry`: one run per warm-up
        setting and state mode, one point per checkpoint step."""
        if mode not in self._writers:
            self._writers[mode] = summaries.PointWriter(eval_logdir(
                self.model_dir, holdout.warmup_name(self.warmup), mode))
        return self._writers[mode]

    def close(self):
        for w in self._writers.values():
            w.close()


def eval_logdir(model_dir, warmup_name, mode=""):
    """`<model_dir>/eval/<warmup>/<mode>`: a TensorBoard run."""
    return os.path.join(model_dir, "eval", warmup_name, *[mode][:bool(mode)])


def with_data_file(config, path):
    """`config` reading its data from `path` (same task, same columns)."""
    d = config.data
    kind = data.task_class(d.task)
    if not kind.reads_file:
        raise ValueError(f"--csv_file/--text_file: this run's task is "
                         f"{d.task!r} (built-in data); there is no file to "
                         "replace.")
    key = kind.file_flag
    path = os.path.abspath(path)
    if kind.has_columns:
        needed = list(d.input_columns) + [
            c for c in (*d.target_columns, d.time_column, d.id_column)
            if c and c not in d.input_columns]
        header = _csv_header(path)
        missing = [c for c in needed if header is not None
                   and c not in header]
        if missing:
            raise ValueError(
                f"--csv_file {path!r} has no column(s) {missing}, which the "
                f"model was trained on (inputs {list(d.input_columns)}, "
                f"targets {list(d.target_columns)}); its columns are "
                f"{header}.")
    return dataclasses.replace(config, data=dataclasses.replace(
        d, **{key: path}))


def _csv_header(spec):
    """The header of the first file `spec` names (a file, a directory or a
    glob), or None when there is none to read (the reader then says why)."""
    if os.path.isdir(spec):
        files = sorted(os.path.join(spec, f) for f in os.listdir(spec)
                       if os.path.isfile(os.path.join(spec, f)))
    else:
        files = sorted(glob.glob(spec)) or [spec]
    if not files or not os.path.isfile(files[0]):
        return None
    with open(files[0], encoding="utf-8-sig", errors="replace") as f:
        line = f.readline()
    try:
        dialect = csv.Sniffer().sniff(line, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return [c.strip() for c in next(csv.reader([line], dialect), [])]


def all_checkpoints(model_dir):
    """Every checkpoint the index lists, oldest first (an error if none)."""
    found = checkpoints.list_checkpoints(model_dir)
    if not found:
        checkpoints.require_checkpoint(model_dir)  # raises with advice
    return found


def watch(model_dir, timeout, poll_seconds=1.0, seen=()):
    """Yields each new checkpoint of `model_dir` as it appears, oldest first.

    Stops after `timeout` seconds without a new one. Only checkpoints listed
    in the index are read, and the index is written after the checkpoint's
    files, so a checkpoint being written is never read.
    """
    seen = set(seen)
    last_new = time.monotonic()
    while True:
        fresh = [p for p in checkpoints.list_checkpoints(model_dir)
                 if p not in seen]
        for path in fresh:
            seen.add(path)
            last_new = time.monotonic()
            yield path
        if time.monotonic() - last_new > timeout:
            return
        time.sleep(poll_seconds)


def sample_text(model, task, prime, length, temperature=1.0, seed=0):
    """Generates `length` characters after `prime`, one `model.step` each."""
    if task.vocab is None:
        raise ValueError(f"--sample generates text; this run's task is "
                         f"{task.name!r}.")
    if not prime:
        raise ValueError("--prime must hold at least one character.")
    index = {ch: i for i, ch in enumerate(task.vocab)}
    unknown = sorted(set(prime) - set(index))
    if unknown:
        raise ValueError(f"--prime has characters that are not in the "
                         f"model's vocabulary: {unknown}")
    vocab_size = len(task.vocab)
    outputs, state = model(tf.one_hot([[index[ch] for ch in prime]],
                                      vocab_size))
    logits = outputs[:, -1]  # [1, V]
    step = tf.function(model.step)
    rng = np.random.default_rng(seed)
    chars = []
    for _ in range(length):
        p = tf.nn.softmax(logits[0] / temperature).numpy().astype(np.float64)
        next_id = int(rng.choice(vocab_size, p=p / p.sum()))
        chars.append(task.vocab[next_id])
        logits, state = step(tf.one_hot([next_id], vocab_size), state)
    return "".join(chars)
