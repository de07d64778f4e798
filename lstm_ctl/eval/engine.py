"""Evaluation: rebuild a run from config.json, restore checkpoints, measure.

`warmup="none"`: the eval stream (held-out data) is run as parallel streams
like training. `warmup="history"`: one lane per stream, whose hold-out starts
from the state its history left (`forecast.Forecaster`). `carry` carries the
state over the whole hold-out; `reset` restarts it at every chunk. The
difference says whether carrying state pays.
"""

import os
import time

import numpy as np
import tensorflow as tf

from lstm_ctl import config as config_lib
from lstm_ctl.run import checkpoints
from lstm_ctl.data import tasks as data
from lstm_ctl.eval import forecast
from lstm_ctl.data import losses
from lstm_ctl.data import pipelines
from lstm_ctl.run import summaries
from lstm_ctl.core import state as state_lib
from lstm_ctl.run.builders import batch_signature, build_model


DEFAULT_WARMUP = {"sine": "none", "text": "history", "csv": "history"}


class Evaluator:
    """Evaluates the checkpoints of one model dir on its eval streams.

    `warmup`: "history" or "none" (None: the task's default); `horizon`:
    forecast that many steps (0: none), which needs an autoregressive task.
    """

    def __init__(self, model_dir, warmup=None, horizon=0):
        self.model_dir = model_dir
        self.config = config_lib.load(model_dir)
        self.task, self.series = data.eval_series(self.config, model_dir)
        self.warmup = warmup or DEFAULT_WARMUP[self.config.data.task]
        self.horizon = horizon
        if horizon:
            forecast.feedback(self.task)  # raises when not autoregressive
        self.arrays = self.dataset = None
        if self.warmup == "none":
            _, self.arrays = data.build_task(self.config.data, "eval",
                                             model_dir)
            # Built once: every checkpoint and state mode reads the same
            # chunks.
            self.dataset = pipelines.stream_dataset(
                self.task, self.arrays, self.config.data.seq_len,
                repeat=False)
        self.model = build_model(self.config, self.task)
        self.forecaster = forecast.Forecaster(self.model, self.task,
                                              self.config.data.seq_len)
        self.last = None  # the last checkpoint's predictions and figure
        self.trace_count = 0
        self.eval_step = self._make_eval_step()
        self._writers = {}

    def _make_eval_step(self):
        model, task = self.model, self.task
        batch_spec, state_spec = batch_signature(task, model)

        def step_fn(batch, state, force_reset):
            self.trace_count += 1
            reset = state_lib.reset_first_step(batch["reset_mask"],
                                               force_reset)
            outputs, final_state = model(batch["inputs"], initial_state=state,
                                         reset_mask=reset, training=False)
            sums = losses.batch_sums(task, outputs, batch["targets"],
                                     batch["weights"])
            return sums, final_state

        return tf.function(step_fn, autograph=False, input_signature=[
            batch_spec, state_spec, tf.TensorSpec([], tf.bool)])

    def restore(self, path):
        """Restores the model from `path`; returns the checkpoint's step."""
        try:
            checkpoints.restore_model(self.model, path)
        except (AssertionError, ValueError) as e:
            raise ValueError(
                f"checkpoint {path} does not match the model described by "
                f"{config_lib.config_path(self.model_dir)}: {e}") from None
        except tf.errors.OpError as e:
            raise checkpoints.CheckpointError(
                f"checkpoint {path} cannot be read "
                f"({checkpoints.short_error(e)})") from None
        return checkpoints.checkpoint_step(path)

    def restore_latest(self, warn):
        """Restores the newest readable checkpoint (older ones stand in for
        a corrupt newest, with a warning); returns its path."""
        path = checkpoints.restore_readable(self.restore, self.model_dir,
                                            warn)
        return path or checkpoints.require_checkpoint(self.model_dir)

    def predictions(self, eval_steps=0):
        """Hold-out predictions of every stream, `(carry, reset, warm
        state)`: carry from the state its history left (warmup="history",
        else the initial state and `warm state` None)."""
        warm = (self.forecaster.warm_up(self.series)
                if self.warmup == "history" else None)
        carry, reset = self.forecaster.predict(
            self.series, warm, eval_steps * self.config.data.seq_len)
        return carry, reset, warm

    def evaluate(self, state_mode, eval_steps=0, predictions=None):
        """`{"loss", <metric>}` of the current weights in one state mode."""
        if self.warmup == "history":
            carry, reset, _ = predictions or self.predictions(eval_steps)
            return self.forecaster.score(
                self.series, carry if state_mode == "carry" else reset,
                eval_steps * self.config.data.seq_len)
        dataset = self.dataset.take(eval_steps) if eval_steps else \
            self.dataset
        state = self.model.initial_state(self.arrays.lanes)
        force = tf.constant(state_mode == "reset")
        totals = {"loss": 0.0, "metric": 0.0, "count": 0.0}
        for batch in dataset:
            sums, state = self.eval_step(batch, state, force)
            for k in totals:
                totals[k] += float(sums[k])
        return losses.finalize(self.task, totals)

    def evaluate_checkpoint(self, path, state_mode="both", eval_steps=0,
                            write_summaries=True, restore=True):
        """Rows `{checkpoint, step, state_mode, loss, <metric>}` for `path`
        (restored first unless `restore=False`), then with a horizon the
        forecast rows `{..., state_mode: forecast_carry|forecast_reset|
        forecast_naive, horizon, rmse}`. Keeps the predictions and the
        figure in `self.last`; the figure also goes to TensorBoard."""
        step = (self.restore(path) if restore
                else checkpoints.checkpoint_step(path))
        modes = ("carry", "reset") if state_mode == "both" else (state_mode,)
        predictions = self.predictions(eval_steps)
        rows = []
        for mode in modes:
            values = self.evaluate(mode, eval_steps, predictions)
            rows.append(dict(checkpoint=path, step=step, state_mode=mode,
                             **values))
            if write_summaries:
                self._writer(mode).scalars(step, values)
        carry, reset, warm = predictions
        paths = None
        if self.horizon and self.task.loss != "xent":  # RMSE: numbers only
            rmse, paths = self.forecaster.skill(self.series, self.horizon,
                                                warm)
            rows += [dict(checkpoint=path, step=step, state_mode=name,
                          horizon=self.horizon, rmse=value)
                     for name, value in rmse.items()]
        png = forecast.figure_png(self.task, self.series, carry, reset, paths,
                                  title=f"{path} (step {step})")
        if write_summaries:
            self._writer("").image(step, "predictions", png)
        self.last = dict(carry=carry, reset=reset, png=png,
                         max_steps=eval_steps * self.config.data.seq_len)
        for w in self._writers.values():
            w.flush()
        return rows

    def write_outputs(self, predictions_csv=None, forecast_csv=None,
                      plot=None):
        """Files of the last evaluated checkpoint: the hold-out predictions,
        the forecast after each whole series, the figure. Returns paths."""
        written = []
        if predictions_csv:
            forecast.write_csv(predictions_csv, forecast.PREDICTION_HEADER,
                               forecast.prediction_rows(
                                   self.task, self.series, self.last["carry"],
                                   self.last["reset"],
                                   self.last["max_steps"]))
            written.append(predictions_csv)
        if forecast_csv:
            values = self.forecaster.forecast(self.series, self.horizon)
            forecast.write_csv(forecast_csv, forecast.FORECAST_HEADER,
                               forecast.forecast_rows(self.task, self.series,
                                                      values))
            written.append(forecast_csv)
        if plot:
            with open(plot, "wb") as f:
                f.write(self.last["png"])
            written.append(plot)
        return written

    def _writer(self, mode):
        """The writer of run `eval/<mode>` (mode "": run `eval`)."""
        if mode not in self._writers:
            self._writers[mode] = summaries.Writer(
                os.path.join(self.model_dir, "eval", *[mode][:bool(mode)]))
        return self._writers[mode]

    def close(self):
        for w in self._writers.values():
            w.close()


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


def format_table(rows, metric):
    """A text table of eval rows, with reset - carry where both were run,
    then the forecast rows."""
    skill = [r for r in rows if "rmse" in r and "loss" not in r]
    rows = [r for r in rows if "loss" in r]
    width = max([len("checkpoint")] + [len(r["checkpoint"]) for r in rows])
    row = f"{{:<{width}}}  {{:>7}}  {{:<13}}  {{:>10}}  {{:>10}}"
    lines = [row.format("checkpoint", "step", "state", "loss", metric)]
    pairs = {}
    for r in rows:
        lines.append(row.format(r["checkpoint"], r["step"], r["state_mode"],
                                f"{r['loss']:.5f}", f"{r[metric]:.5f}"))
        pair = pairs.setdefault(r["checkpoint"], {})
        pair[r["state_mode"]] = r
        if len(pair) == 2:
            lines.append(row.format(
                "", "", "reset - carry",
                f"{pair['reset']['loss'] - pair['carry']['loss']:+.5f}",
                f"{pair['reset'][metric] - pair['carry'][metric]:+.5f}"))
    if skill:
        lines += ["", forecast.format_skill(skill)]
    return "\n".join(lines)


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
