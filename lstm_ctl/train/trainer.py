"""The GradientTape trainer: one compiled train step, the state policy, the loop.

State policy (`state_mode`, `burn_in`; see policy.py): "carry" passes the
final state of batch k, through `tf.stop_gradient`, to batch k+1 (the data's
`reset_mask` restarts a lane where a new stream begins, and every
`reset_every` batches the whole state restarts); "reset" starts every
shuffled chunk from the initial state; "stored" from the state stored for it.

The step is built by step.py; the Python loop around it does logging,
checkpoints, validation and progress.
"""

import io
import os
import shutil
import signal
import sys

import keras
import numpy as np
import tensorflow as tf

from lstm_ctl import config as config_lib
from lstm_ctl.run import checkpoints
from lstm_ctl.config import ensemble as ensemble_layout
from lstm_ctl.data import tasks as data
from lstm_ctl.train import distribute
from lstm_ctl.train import state_policy as policy_lib
from lstm_ctl.train import progress
from lstm_ctl.train import step as step_lib
from lstm_ctl.train import validation as validation_lib
from lstm_ctl.run import holdout
from lstm_ctl.run import summaries
from lstm_ctl.core import state as state_lib
from lstm_ctl.run.builders import build_model, build_optimizer

# Settings that must not change when a run resumes from its checkpoints.
FIXED_ON_RESUME = ("model", "data", "state_mode", "burn_in", "precision")


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss); the message says why and
    which checkpoint is the last good one."""


def check_resumable(config, model_dir):
    """A model dir holding another run's config is an error, not a mix-up
    (an ensemble's too)."""
    ensemble_layout.check(model_dir, config.ensemble)
    path = config_lib.config_path(model_dir)
    if not os.path.exists(path):
        return
    # Paths recorded as typed by older runs: relative to here.
    old = config_lib.to_dict(config_lib.with_absolute_paths(
        config_lib.load(model_dir)))
    new = config_lib.to_dict(config)
    if not old["data"]["input_columns"]:   # recorded before they resolved
        old["data"]["input_columns"] = new["data"]["input_columns"]
    changed = config_lib.changed_settings(old, new, FIXED_ON_RESUME)
    if changed and checkpoints.latest_checkpoint(model_dir):
        raise ValueError(
            f"{model_dir!r} holds checkpoints of a run with other settings: "
            f"{'; '.join(changed)} (recorded -> now). Resume with the "
            "recorded settings or use another --model_dir.")


class Trainer:
    """Builds the model, data, optimizer and checkpoints of one run."""

    def __init__(self, config, out=None, strategy=None, task=None):
        """`task`: the `(Task, StreamArrays)` that `data.build_task` gave
        for this config, when the caller has read the data already.
        Settings left None are filled as train.py fills them
        (config/defaults.py)."""
        from lstm_ctl.config import defaults
        config = config_lib.with_saved_input_columns(config)
        config, _, line = defaults.resolve_and_describe(config)
        if config.ensemble > 1:   # given, or chosen from the data
            raise ValueError(
                f"A Trainer trains one model; --ensemble={config.ensemble} "
                "trains several: trainer.train(config).")
        if line:
            print(line, file=out or sys.stdout)
        config_lib.validate(config)
        config = config_lib.with_absolute_paths(config)
        self.model_dir = config.model_dir
        # Bad data stops here, before the model dir is touched.
        self.task, self.arrays = task or data.build_task(
            config.data, "train", self.model_dir,
            state_mode=config.state_mode,
            validate_on=config.validate_on)
        config = config_lib.with_input_columns(config,
                                               self.task.input_columns)
        self.config = config
        check_resumable(config, self.model_dir)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy = strategy or distribute.make_strategy(
            config.strategy, config.cpu_replicas)
        distribute.check_batch_size(self.strategy, config.data.batch_size)
        self.chief = distribute.is_chief(self.strategy)
        self.out = (out or sys.stdout) if self.chief else io.StringIO()
        keras.utils.set_random_seed(config.seed)
        self.baseline = self.task.baseline_loss(self.arrays)
        # The most steps training carries a state over (run.json), so that
        # evaluation can warn when its warm-up goes further.
        self.state_horizon = holdout.state_horizon(
            self.arrays, config.data.seq_len, config.state_mode,
            config.burn_in, config.reset_every)
        self.policy = policy_lib.StatePolicy(config, self.arrays)
        with self.strategy.scope():
            self.model = build_model(config, self.task)
            self.optimizer = build_optimizer(config)
            self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                name="step")
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False,
                                   name="nonfinite_steps")
        self.carried = state_lib.StateVariables(
            config.model.num_layers, config.model.units, name="carried_state")
        # Every worker computes the same global batches; each replica then
        # takes its own rows of them (see distribute.replica_rows).
        self.data_autotune = _data_autotune(self.model_dir)
        self.dataset = self.policy.dataset(self.task, self.arrays,
                                           autotune=self.data_autotune)
        self.iterator = iter(self.dataset)
        stored = ({} if self.policy.table is None
                  else {"stored_state": self.policy.table})
        self.checkpoints = checkpoints.Checkpoints(
            distribute.worker_dir(self.model_dir, self.strategy),
            config.max_to_keep, model=self.model, optimizer=self.optimizer,
            step=self.step, nonfinite_steps=self.skipped, state=self.carried,
            data=self.iterator, **stored)
        self.trace_count = 0
        self.train_step = step_lib.make_train_step(
            self.model, self.optimizer, self.task, self.strategy,
            self.policy, config.clip_norm, config.jit_compile,
            on_trace=self._count_trace,
            batch_size=self.dataset.element_spec["inputs"].shape[0])
        self.eval_every = config_lib.eval_every(config)
        self.validation = None  # built in run(), after the restore
        self.early_stopped = False

    def _count_trace(self):
        self.trace_count += 1

    # ------------------------------------------------------------ the loop
    def restore(self):
        """Resumes from the newest readable checkpoint in model_dir (every
        worker reads the chief's); returns its path or None."""
        return checkpoints.restore_readable(
            self.checkpoints.restore, self.model_dir, self._warn)

    def _print(self, line):
        print(line, file=self.out, flush=True)

    def _warn(self, line):
        if self.chief:
            print(line, file=sys.stderr, flush=True)

    def run(self):
        """Trains to `train_steps`; returns a summary dict of the run."""
        config = self.config
        resumed = self.restore()
        own_dir = distribute.worker_dir(self.model_dir, self.strategy)
        os.makedirs(own_dir, exist_ok=True)
        if self.chief:
            config_lib.save(config, self.model_dir)
            self.task.save(self.model_dir)
            holdout.save_run_info(self.model_dir,
                                  state_horizon=self.state_horizon,
                                  data_autotune=self.data_autotune)
        writer = summaries.Writer(os.path.join(own_dir, "train"))
        start = int(self.step.numpy())
        if self.eval_every:
            self.validation = validation_lib.Validation(
                config, self.task, self.model, self.checkpoints.checkpoint,
                own_dir, self.model_dir, resumed_step=start)
        if resumed:
            self._print(f"Resuming from {resumed} (step {start}).")
        else:
            writer.config(config_lib.to_dict(config))
        self._print(f"Checkpoints: {os.path.abspath(self.model_dir)}  |  "
                    f"TensorBoard: tensorboard --logdir "
                    f"{os.path.abspath(self.model_dir)}")
        log = progress.Progress(self._print, writer, config.train_steps,
                                start, config.data.batch_size,
                                self.task.metric, label=self.policy.label)
        try:
            step, state, losses_seen, interrupted = self._loop(start, log,
                                                               writer)
            if checkpoints.checkpoint_step(self.checkpoints.latest
                                           or "") != step:
                self._save(state, step)
            v = self.validation
            if (v is not None and interrupted is None and step > start
                    and (v.last is None or v.last["step"] != step)):
                self._validate(state, step, log)
        finally:
            writer.close()
            if self.validation is not None:
                self.validation.close()
        if not self.chief:
            shutil.rmtree(own_dir, ignore_errors=True)
        if interrupted is not None:
            name = signal.Signals(interrupted).name
            self._print(f"Stopped by {name} at step {step}: saved "
                        f"{self.checkpoints.latest}. Run the same command "
                        "again to resume from it.")
        result = self._finish(step, start, losses_seen, log.seconds,
                              interrupted)
        result["interrupted"] = interrupted
        return result

    def _loop(self, start, log, writer):
        config = self.config
        batch_size = config.data.batch_size
        state = self.carried.read()
        if state is None:
            state = self.model.initial_state(batch_size)
        losses_seen, step = [], start
        v = self.validation
        if v is not None and v.should_stop:
            self.early_stopped = True
            self._print(f"Stopped early before, at step {start}: no "
                        f"improvement in {v.stale} evaluations (best "
                        f"{v.best['loss']:.5f} at step {v.best['step']}, "
                        f"{v.best['checkpoint']}).")
            return step, state, losses_seen, None
        with progress.stop_on_signals() as stop:
            while (step < config.train_steps and not stop
                   and not self.early_stopped):
                force = (bool(config.reset_every)
                         and step % config.reset_every == 0)
                metrics, new_state, grads = self.train_step(
                    next(self.iterator), state, tf.constant(force))
                step += 1
                finite = bool(metrics.pop("finite"))
                losses_seen.append(float(metrics["loss"]))
                if finite:
                    state = new_state
                else:
                    if not config.skip_nonfinite:
                        raise TrainingError(self._nonfinite_message(
                            step, losses_seen[-1]))
                    # Skipped: no update, and the state restarts.
                    self.skipped.assign_add(1)
                    state = self.model.initial_state(batch_size)
                log.add(metrics)
                if step % config.log_every == 0 or step == config.train_steps:
                    log.flush(step, {"nonfinite_steps": int(self.skipped)})
                if step % config.hist_every == 0 and finite:
                    writer.histograms(step, self.model, grads, state)
                if step % config.checkpoint_every == 0:
                    self._save(state, step)
                if self.eval_every and step % self.eval_every == 0:
                    self._validate(state, step, log)
            interrupted = stop[0] if stop else None
        return step, state, losses_seen, interrupted

    def _validate(self, state, step, log):
        """Scores the hold-out at `step`, keeps the best checkpoint, and
        decides on early stopping."""
        v = self.validation

        def save_best(manager):
            self.step.assign(step)
            self.carried.assign(state)
            manager.save(checkpoint_number=int(step))

        scores = v.evaluate(step, save_best)
        line = v.line(step, scores)
        self._print(line)
        log.note = (f"{v.where} {v.criterion} "
                    f"{scores[v.criterion]['loss']:.5f} (best "
                    f"{v.best['loss']:.5f} @ {v.best['step']})")
        if v.should_stop and step < self.config.train_steps:
            self.early_stopped = True
            self._print(f"Early stopping at step {step}: no improvement of "
                        f"the {v.where} {v.criterion} loss in {v.stale} "
                        "evaluations "
                        f"(--early_stopping={v.patience}); best "
                        f"{v.best['loss']:.5f} at step {v.best['step']}.")

    def _nonfinite_message(self, step, loss):
        latest = checkpoints.latest_checkpoint(self.model_dir)
        return (f"non-finite loss ({loss}) at step {step}: its update was not "
                f"applied and training stopped. Last good checkpoint: "
                f"{latest or 'none yet'} (no checkpoint of step {step} was "
                "written; running the same command resumes from it). Lower "
                "--learning_rate or --clip_norm, check the data, or pass "
                "--skip_nonfinite to skip such steps.")

    def _save(self, state, step):
        bad = [v.path for v in self.model.weights
               if "float" in str(v.dtype)
               and not np.isfinite(np.asarray(v)).all()]
        if bad:
            raise TrainingError(
                f"refusing to save non-finite weights ({', '.join(bad)}) at "
                f"step {step}; last good checkpoint: "
                f"{checkpoints.latest_checkpoint(self.model_dir)}.")
        self.step.assign(step)
        self.carried.assign(state)
        return self.checkpoints.save(step)

    def _finish(self, step, start, losses_seen, seconds, interrupted=None):
        tail = [x for x in losses_seen[-max(1, self.config.log_every):]
                if np.isfinite(x)]
        final = float(np.mean(tail)) if tail else float("nan")
        result = {"step": step, "steps_run": step - start,
                  "final_loss": final, "baseline_loss": self.baseline,
                  "baseline": self.task.baseline_name,
                  "losses": losses_seen, "seconds": seconds,
                  "nonfinite_steps": int(self.skipped),
                  "checkpoint": self.checkpoints.latest}
        v = self.validation
        held_out = v.summary() if v is not None else None
        if v is not None and v.last is not None:
            result.update(heldout=v.last, best=v.best,
                          early_stopped=self.early_stopped)
        if losses_seen:
            ratio = self.baseline / max(final, 1e-12)
            than = (f"{ratio:.1f}x lower" if ratio >= 1 else
                    f"{1 / ratio:.1f}x higher: not better than the baseline")
            train = (f"final train loss {final:.5f} (mean of the last "
                     f"{len(tail)} steps) vs naive {self.task.baseline_name}"
                     f" baseline {self.baseline:.5f} ({than})")
            if held_out:
                train = (f"{held_out}; train loss {final:.5f} (mean of the "
                         f"last {len(tail)} steps)")
            self._print(
                f"{'Stopped' if interrupted else 'Done'}: step {step}, "
                f"{train} in {seconds:.0f} s.")
        else:
            self._print(f"Nothing to do: {self.model_dir} is already trained "
                        f"to step {step} (--train_steps="
                        f"{self.config.train_steps}).")
        self._print(f"Checkpoint: {self.checkpoints.latest}")
        if v is not None and v.best:
            self._print(f"Best: {v.best['checkpoint']} ({v.where} "
                        f"{v.criterion} loss "
                        f"{v.best['loss']:.5f}, step {v.best['step']}); "
                        f"evaluate it with --checkpoint=best.")
        return result


def _data_autotune(model_dir):
    """Whether the run's data pipeline keeps tf.data's autotuning: only to
    resume a run whose checkpoints were written with it (before run.json
    recorded `data_autotune`), as its checkpointed iterator restores only
    into such a pipeline (data/pipelines.py `finish`)."""
    return (checkpoints.latest_checkpoint(model_dir) is not None and
            holdout.load_run_info(model_dir).get("data_autotune", True))


def train(config, out=None, task=None):
    """Trains (or resumes) the run described by `config` (with
    `config.ensemble` > 1: each member in turn, train/ensemble.py). An
    ensemble size left to the data (None) is chosen first."""
    if config.ensemble is None:
        from lstm_ctl.config import defaults
        config, _, line = defaults.resolve_and_describe(
            config_lib.with_saved_input_columns(config))
        if line:
            print(line, file=out or sys.stdout, flush=True)
    if config.ensemble > 1:
        from lstm_ctl.train import ensemble
        return ensemble.train(config, out)
    return Trainer(config, out=out, task=task).run()
