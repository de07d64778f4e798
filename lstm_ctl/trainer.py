"""The GradientTape trainer: one compiled train step, the state policy, the loop.

State policy (`state_mode`):
- "carry": the final state of batch k, through `tf.stop_gradient`, starts
  batch k+1 (truncated backprop through time); the data's `reset_mask`
  restarts a lane where a new stream begins, and every `reset_every` batches
  the whole state restarts.
- "reset": every batch starts from the initial state (chunks shuffled).

The Python loop around the step does logging, checkpoints and progress.
"""

import contextlib
import io
import os
import shutil
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from lstm_ctl import checkpoints, config as config_lib, data, distribute
from lstm_ctl import losses, summaries
from lstm_ctl import state as state_lib
from lstm_ctl.model import LSTMModel
from lstm_ctl.state import LSTMState

# Settings that must not change when a run resumes from its checkpoints.
FIXED_ON_RESUME = ("model", "data", "state_mode", "seed")


def build_model(config, task):
    m = config.model
    return LSTMModel(units=m.units, output_dim=task.output_dim,
                     num_layers=m.num_layers, dropout=m.dropout,
                     recurrent_dropout=m.recurrent_dropout,
                     initial_state_mode=m.initial_state_mode,
                     input_dim=task.input_dim, seed=config.seed)


def build_optimizer(config):
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=config.train_steps, alpha=0.05)
    return keras.optimizers.Adam(learning_rate=lr)


def batch_signature(task, model):
    targets = (tf.TensorSpec([None, None], tf.int32) if task.loss == "xent"
               else tf.TensorSpec([None, None, task.output_dim], tf.float32))
    state = tuple(LSTMState(tf.TensorSpec([None, model.units], tf.float32),
                            tf.TensorSpec([None, model.units], tf.float32))
                  for _ in range(model.num_layers))
    batch = {"inputs": tf.TensorSpec([None, None, task.input_dim], tf.float32),
             "targets": targets,
             "reset_mask": tf.TensorSpec([None, None], tf.bool),
             "weights": tf.TensorSpec([None, None], tf.float32)}
    return batch, state


def check_resumable(config, model_dir):
    """A model dir holding another run's config is an error, not a mix-up."""
    path = config_lib.config_path(model_dir)
    if not os.path.exists(path):
        return
    old = config_lib.to_dict(config_lib.load(model_dir))
    new = config_lib.to_dict(config)
    changed = [k for k in FIXED_ON_RESUME if old[k] != new[k]]
    if changed and checkpoints.latest_checkpoint(model_dir):
        details = "; ".join(f"{k}: {old[k]} -> {new[k]}" for k in changed)
        raise ValueError(
            f"{model_dir!r} holds checkpoints of a run with other settings "
            f"({details}). Resume with the same settings or use another "
            "--model_dir.")


class Trainer:
    """Builds the model, data, optimizer and checkpoints of one run."""

    def __init__(self, config, out=sys.stdout, strategy=None):
        self.config = config_lib.validate(config)
        self.model_dir = config.model_dir
        os.makedirs(self.model_dir, exist_ok=True)
        check_resumable(config, self.model_dir)
        self.strategy = strategy or distribute.make_strategy(
            config.strategy, config.cpu_replicas)
        distribute.check_batch_size(self.strategy, config.data.batch_size)
        self.chief = distribute.is_chief(self.strategy)
        self.out = out if self.chief else io.StringIO()
        keras.utils.set_random_seed(config.seed)
        self.task, self.arrays = data.build_task(config.data, "train",
                                                 self.model_dir)
        self.baseline = data.baseline_loss(self.task, self.arrays)
        with self.strategy.scope():
            self.model = build_model(config, self.task)
            self.optimizer = build_optimizer(config)
            self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                name="step")
        self.carried = checkpoints.CarriedState(config.model.num_layers,
                                                config.model.units)
        # Every worker computes the same global batches; each replica then
        # takes its own rows of them (see distribute.replica_rows).
        self.dataset = data.train_dataset(self.task, self.arrays,
                                          config.data.seq_len,
                                          config.state_mode, config.seed)
        self.iterator = iter(self.dataset)
        self.checkpoints = checkpoints.Checkpoints(
            distribute.worker_dir(self.model_dir, self.strategy),
            config.max_to_keep, model=self.model, optimizer=self.optimizer,
            step=self.step, state=self.carried, data=self.iterator)
        self.trace_count = 0
        self.train_step = self._make_train_step()

    # ------------------------------------------------------------ the step
    def _make_train_step(self):
        model, optimizer, task = self.model, self.optimizer, self.task
        strategy, clip_norm = self.strategy, self.config.clip_norm
        batch_spec, state_spec = batch_signature(task, model)

        def replica_fn(batch, state, global_count):
            batch, state = distribute.replica_rows((batch, state))
            with tf.GradientTape() as tape:
                outputs, final_state = model(
                    batch["inputs"], initial_state=state_lib.stop_gradient(
                        state), reset_mask=batch["reset_mask"], training=True)
                sums = losses.batch_sums(task, outputs, batch["targets"],
                                         batch["weights"])
                # Scaled by the global batch's weight: summed over replicas
                # this is the mean loss of the whole batch.
                loss = sums["loss"] / global_count
            variables = model.trainable_variables
            grads = tape.gradient(loss, variables)
            ctx = tf.distribute.get_replica_context()
            replicas = ctx.num_replicas_in_sync
            if replicas > 1:
                grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            # Clip the whole batch's gradient, the same on every replica.
            grad_norm = tf.linalg.global_norm(grads)
            if clip_norm > 0:
                grads, _ = tf.clip_by_global_norm(grads, clip_norm,
                                                  use_norm=grad_norm)
            lr = optimizer.learning_rate  # before this step's update
            if replicas > 1:
                # The Keras optimizer sums gradients over replicas again.
                grads = [g / replicas for g in grads]
            optimizer.apply_gradients(zip(grads, variables))
            if replicas > 1:
                grads = [g * replicas for g in grads]
            return sums, tf.nest.flatten(final_state), grads, grad_norm, lr

        def step_fn(batch, state, force_reset):
            self.trace_count += 1
            reset = batch["reset_mask"]
            # A forced reset (reset_every) restarts every lane at step 0.
            first = tf.logical_and(force_reset, tf.equal(
                tf.range(tf.shape(reset)[1]), 0))
            batch = dict(batch, reset_mask=tf.logical_or(reset, first[None]))
            global_count = tf.maximum(tf.reduce_sum(batch["weights"]), 1.0)
            sums, final_state, grads, grad_norm, lr = strategy.run(
                replica_fn, args=(batch, state, global_count))
            sums = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v,
                                       axis=None) for k, v in sums.items()}
            first_replica = strategy.experimental_local_results
            metrics = losses.finalize(task, sums)
            metrics.update(grad_norm=first_replica(grad_norm)[0],
                           learning_rate=first_replica(lr)[0])
            # Gathered tensor by tensor: strategy.gather on a list or tuple
            # (TF 2.21) returns one replica's rows only.
            final_state = tf.nest.pack_sequence_as(
                state, [strategy.gather(t, axis=0) for t in final_state])
            grads = [first_replica(g)[0] for g in grads]
            return metrics, final_state, grads

        return tf.function(
            step_fn, jit_compile=self.config.jit_compile, autograph=False,
            input_signature=[batch_spec, state_spec,
                             tf.TensorSpec([], tf.bool)])

    # ------------------------------------------------------------ the loop
    def restore(self):
        """Resumes from the latest checkpoint; returns its path or None.

        Every worker restores the chief's latest checkpoint in model_dir.
        """
        latest = checkpoints.latest_checkpoint(self.model_dir)
        if latest:
            self.checkpoints.restore(latest)
        return latest

    def _print(self, line):
        print(line, file=self.out, flush=True)

    def run(self):
        """Trains to `train_steps`; returns a summary dict of the run."""
        config = self.config
        resumed = self.restore()
        own_dir = distribute.worker_dir(self.model_dir, self.strategy)
        if self.chief:
            config_lib.save(config, self.model_dir)
        writer = summaries.Writer(os.path.join(own_dir, "train"))
        start = int(self.step.numpy())
        if resumed:
            self._print(f"Resuming from {resumed} (step {start}).")
        else:
            writer.config(config_lib.to_dict(config))
        self._print(f"Checkpoints: {os.path.abspath(self.model_dir)}  |  "
                    f"TensorBoard: tensorboard --logdir "
                    f"{os.path.abspath(self.model_dir)}")
        state = self.carried.read()
        if state is None:
            state = self.model.initial_state(config.data.batch_size)
        losses_seen, window, window_start = [], [], time.perf_counter()
        t0 = time.perf_counter()
        step, interrupted = start, None
        with _stop_on_signals() as stop:
            while step < config.train_steps and not stop:
                force = (bool(config.reset_every)
                         and step % config.reset_every == 0)
                batch = next(self.iterator)
                metrics, state, grads = self.train_step(batch, state,
                                                        tf.constant(force))
                step += 1
                self.step.assign(step)
                losses_seen.append(float(metrics["loss"]))
                window.append({k: float(v) for k, v in metrics.items()})
                if step % config.log_every == 0 or step == config.train_steps:
                    window_start = self._log(writer, step, window,
                                             window_start, t0, start)
                    window = []
                if step % config.hist_every == 0:
                    writer.histograms(step, self.model, grads, state)
                if step % config.checkpoint_every == 0:
                    self._save(state, step)
            interrupted = stop[0] if stop else None
        if checkpoints.checkpoint_step(self.checkpoints.latest or "") != step:
            self._save(state, step)
        writer.close()
        if not self.chief:
            shutil.rmtree(own_dir, ignore_errors=True)
        if interrupted is not None:
            name = signal.Signals(interrupted).name
            self._print(f"Stopped by {name} at step {step}: saved "
                        f"{self.checkpoints.latest}. Run the same command "
                        "again to resume from it.")
        result = self._finish(step, start, losses_seen, t0, interrupted)
        result["interrupted"] = interrupted
        return result

    def _save(self, state, step):
        self.carried.assign(state)
        return self.checkpoints.save(step)

    def _log(self, writer, step, window, window_start, t0, start):
        now = time.perf_counter()
        steps_per_sec = len(window) / max(now - window_start, 1e-9)
        mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
        mean["steps_per_sec"] = steps_per_sec
        mean["examples_per_sec"] = steps_per_sec * self.config.data.batch_size
        writer.scalars(step, mean)
        writer.flush()
        left = (self.config.train_steps - step) / max(
            (step - start) / max(now - t0, 1e-9), 1e-9)
        metric = self.task.metric
        self._print(
            f"step {step}/{self.config.train_steps}  loss {mean['loss']:.5f}"
            f"  {metric} {mean[metric]:.4f}  |  {steps_per_sec:.1f} steps/s"
            f"  {mean['examples_per_sec']:.0f} ex/s  |  "
            f"left {_clock(left)}")
        return now

    def _finish(self, step, start, losses_seen, t0, interrupted=None):
        tail = losses_seen[-max(1, min(len(losses_seen),
                                       self.config.log_every)):]
        final = float(np.mean(tail)) if losses_seen else float("nan")
        result = {"step": step, "steps_run": step - start,
                  "final_loss": final, "baseline_loss": self.baseline,
                  "baseline": self.task.baseline_name,
                  "losses": losses_seen,
                  "seconds": time.perf_counter() - t0,
                  "checkpoint": self.checkpoints.latest}
        if losses_seen:
            self._print(
                f"{'Stopped' if interrupted else 'Done'}: step {step}, "
                f"final train loss {final:.5f} (mean of "
                f"the last {len(tail)} steps) vs naive "
                f"{self.task.baseline_name} baseline {self.baseline:.5f} "
                f"({self.baseline / max(final, 1e-12):.1f}x lower) in "
                f"{result['seconds']:.0f} s.")
        else:
            self._print(f"Nothing to do: {self.model_dir} is already trained "
                        f"to step {step} (--train_steps="
                        f"{self.config.train_steps}).")
        self._print(f"Checkpoint: {self.checkpoints.latest}")
        return result


@contextlib.contextmanager
def _stop_on_signals():
    """Yields a list that receives SIGINT/SIGTERM instead of dying at once.

    The loop finishes its step, saves a checkpoint and returns. A second
    signal stops at once (the last complete checkpoint stays intact).
    """
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    signums = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signums}

    def handler(signum, frame):
        if received:
            signal.signal(signum, previous[signum] or signal.SIG_DFL)
            raise KeyboardInterrupt
        received.append(signum)

    for s in signums:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s in signums:
            signal.signal(s, previous[s])


def _clock(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train(config, out=sys.stdout):
    """Trains (or resumes) the run described by `config`."""
    return Trainer(config, out=out).run()
