"""Validation during training: every `eval_every` steps the hold-out is
scored as `evaluate.py` scores it (run/holdout.py: carry after the warm-up
over each stream's history, reset, naive), logged to TensorBoard under the
run's eval runs (`eval/history/<mode>`), and the best checkpoint by the
held-out loss of the trained state mode (carry for carry and stored
training; reset, each chunk from the initial state, for reset and windows
training) is kept in `<model_dir>/best`, apart from the latest
ones, so `max_to_keep` never deletes it. `early_stopping=P` stops after P
evaluations without improvement.

The best checkpoint is saved by its own CheckpointManager (max_to_keep=1):
TensorFlow writes the new checkpoint's files, then its index atomically, and
only then deletes the old best, so a crash never loses the last good best.
`validation.json` records every evaluation and the best.
"""

import json
import os

import tensorflow as tf

from lstm_ctl.data import tasks as data
from lstm_ctl.run import checkpoints
from lstm_ctl.run import holdout
from lstm_ctl.run import summaries

HISTORY_FILE = "validation.json"
WARMUP = "history"


FORECAST_STEPS = 52  # the most rows the forecast criterion covers


def can_forecast(task):
    """Numbers whose every input is a target: a roll-out can be scored."""
    if not task.numeric:
        return False
    try:
        task.feedback()
    except ValueError:
        return False
    return True


def criterion(state_mode, task):
    """The held-out score that picks the best checkpoint, the one the
    trained state mode is for: "carry" (carry, stored), "reset" (reset), or
    in windows mode "forecast": the roll-out from the validation rows'
    start, warmed up over the last `seq_len` rows before them (RMSE of its
    first FORECAST_STEPS rows, normalised), where the task can forecast."""
    if state_mode == "windows" and can_forecast(task):
        return "forecast"
    return holdout.forecast_mode(state_mode)


class Validation:
    """Scores the hold-out of a run and keeps its best checkpoint."""

    def __init__(self, config, task, model, checkpoint, run_dir, model_dir,
                 resumed_step=0):
        """`checkpoint`: the trainer's tf.train.Checkpoint (the best holds
        what a training checkpoint holds); `run_dir`: where this worker
        writes (the model dir on the chief); `model_dir`: the run's dir,
        where the eval summaries go."""
        self.task = task
        self.metric = task.metric
        _, self.series = data.eval_series(config, model_dir)
        # Training read these streams' histories (sine: signals of its own)
        history = config.validate_on == "history" and task.reads_file
        if history:
            self.series = data.history_split(self.series)
        self.runner = holdout.Runner(model, task, config.data.seq_len)
        self.patience = config.early_stopping
        self.criterion = criterion(config.state_mode, task)
        # What the scores are of: the hold-out, or the history's end.
        self.where = "validation" if history else "held-out"
        self.best_dir = checkpoints.best_dir(run_dir)
        self.manager = tf.train.CheckpointManager(
            checkpoint, self.best_dir, max_to_keep=1,
            checkpoint_name=checkpoints.CHECKPOINT_NAME)
        self.path = os.path.join(run_dir, HISTORY_FILE)
        self.model_dir, self.chief = model_dir, run_dir == model_dir
        saved = self._load()
        # A resumed run evaluates again from its checkpoint on.
        self.history = [h for h in saved.get("history", [])
                        if h["step"] <= resumed_step]
        self.best = saved.get("best") if self.manager.latest_checkpoint \
            else None
        self.writers = {}

    def _load(self):
        if not os.path.exists(self.path):
            return {}
        with open(self.path) as f:
            try:
                return json.load(f)
            except json.JSONDecodeError:
                return {}

    def _write(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".tmp", "w") as f:
            json.dump({"history": self.history, "best": self.best}, f,
                      indent=2)
            f.write("\n")
        os.replace(self.path + ".tmp", self.path)

    @property
    def stale(self):
        """Evaluations since the best one."""
        if not self.best:
            return len(self.history)
        return sum(h["step"] > self.best["step"] for h in self.history)

    @property
    def should_stop(self):
        return bool(self.patience) and self.stale >= self.patience

    @property
    def last(self):
        return self.history[-1] if self.history else None

    def evaluate(self, step, save_best):
        """Scores the current weights at `step`; `save_best()` saves them to
        the best manager when they are the best so far. Returns the scores
        `{"carry"|"reset"|"naive": {"loss", <metric>}}`."""
        scores, _ = self.runner.scores(self.series, WARMUP)
        if self.criterion == "forecast":
            backtests = self.runner.forecast_scores(
                self.series, FORECAST_STEPS, ("reset", "naive"))
            scores.update(forecast=backtests["reset"],
                          forecast_naive=backtests["naive"])
        loss = scores[self.criterion]["loss"]
        improved = self.best is None or loss < self.best["loss"]
        if improved:
            save_best(self.manager)
            self.best = {"step": int(step), "loss": loss,
                         "mode": self.criterion,
                         "checkpoint": self.manager.latest_checkpoint}
        self.history = [h for h in self.history if h["step"] < step]
        self.history.append({"step": int(step), **scores})
        self._write()
        if self.chief:
            for mode, values in scores.items():
                writer = self.writers.get(mode)
                if writer is None:
                    writer = self.writers[mode] = summaries.PointWriter(
                        os.path.join(self.model_dir, "eval", WARMUP, mode))
                writer.scalars(step, values)
                writer.flush()
        return scores

    def line(self, step, scores):
        """The progress line of one evaluation."""
        c, r, n = (scores[k] for k in holdout.SCORED_MODES)
        m = self.metric
        best = self.best
        f = (f"  forecast {scores['forecast']['loss']:.5f} (naive "
             f"{scores['forecast_naive']['loss']:.5f})"
             if "forecast" in scores else "")
        return (f"{self.where} at step {step}: carry loss {c['loss']:.5f} "
                f"({m} {c[m]:.4f})  reset {r['loss']:.5f}{f}  naive "
                f"{n['loss']:.5f}  |  best {self.criterion} "
                f"{best['loss']:.5f} at step "
                f"{best['step']}" + ("  (new best)" if best["step"] == step
                                     else f"  ({self.stale} without "
                                     "improvement)"))

    def summary(self):
        """The final lines' held-out part (None before any evaluation)."""
        last = self.last
        if last is None:
            return None
        other = "reset" if self.criterion == "carry" else "carry"
        naive = "naive"
        if self.criterion == "forecast":
            other, naive = "reset", "forecast_naive"
        c, r, n = (last[k]["loss"] for k in (self.criterion, other, naive))
        ratio = n / max(c, 1e-12)
        than = (f"{ratio:.1f}x lower" if ratio >= 1 else
                f"{c / max(n, 1e-12):.1f}x higher: not better than the "
                "baseline")
        return (f"{self.where} {self.criterion} loss {c:.5f} at step "
                f"{last['step']} vs naive {self.task.baseline_name} baseline "
                f"{n:.5f} ({than}; {other} {r:.5f})")

    def close(self):
        for w in self.writers.values():
            w.close()
