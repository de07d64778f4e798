"""Fault injection, trainer set-ups and TensorBoard reading that several
test modules use."""

import contextlib
import importlib.util
import io
import os
import pathlib
import socket
import subprocess
import sys
import typing

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator)
from tensorboard.util import tensor_util

from lstm_ctl.core.state import LSTMState
from lstm_ctl.train import trainer


def set_grappler(on):
    """Grappler (TensorFlow's graph rewrites for speed) on or off for the
    functions that run from now on in this process.

    Off in the tests that run in process: it rewrites every new function
    graph before its first call, and the suite makes several hundred of
    them (a train step per run, a forward pass per evaluation), each called
    a few times. A first call of a tiny train step took 0.26-0.30 s with
    it and 0.09-0.10 s without; the whole suite 4 min 55 s to 5 min 8 s
    with, 4 min 39 s without. The e2e tests turn it on again
    (tests/e2e/conftest.py), for the runs they compare in process with
    their processes, so the graphs a user runs are tested too; test_trainer
    checks that a run with it gives the same losses and weights as one
    without, bit for bit."""
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": not on})


class NaNAt:
    """Fault injection: the batch of step `step` (1-based) gets a NaN input
    in row 0."""

    def __init__(self, iterator, step):
        self.iterator, self.step, self.count = iterator, step, 0

    def __next__(self):
        batch = next(self.iterator)
        self.count += 1
        if self.count == self.step:
            inputs = batch["inputs"].numpy()
            inputs[0, 1, 0] = np.nan
            batch = dict(batch, inputs=tf.constant(inputs))
        return batch


def frozen_trainer(config):
    """A trainer whose updates are zero, so its weights stay put."""
    t = trainer.Trainer(config, out=io.StringIO())
    t.optimizer.learning_rate.assign(0.0)
    return t


def scalars(model_dir, tag, run="train"):
    """`{step: value}` of scalar `tag` in `model_dir/run`'s events (a
    resumed run logs the steps after its checkpoint again: the last wins)."""
    acc = EventAccumulator(str(pathlib.Path(model_dir) / run),
                           size_guidance={"tensors": 0})
    acc.Reload()
    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto))
            for e in acc.Tensors(tag)}


# ------------------------------------------------------------ entry points
ROOT = pathlib.Path(__file__).resolve().parents[1]


class Result(typing.NamedTuple):
    """What a run of an entry point left: its exit code and its output."""
    returncode: int
    stdout: str
    stderr: str


def _entry_point(script):
    """train.py or evaluate.py as a module (imported once per process)."""
    name = "_entry_" + pathlib.Path(script).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_main(script, *args):
    """Runs `script`'s `main` in this process, as `python script args`
    would, and returns its exit code and what it printed. In process, a run
    pays neither TensorFlow's import nor a fresh XLA compile; tests that
    need a real process (signals, kill -9, workers) use `run_process`."""
    from absl import app
    module = _entry_point(script)
    argv = [script, *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            from absl import flags
            if module.FLAGS is flags.FLAGS:
                # An entry point on absl's global FLAGS, parsed by app.run.
                flags.FLAGS.unparse_flags()
                try:
                    argv = flags.FLAGS(argv)
                except flags.Error as e:
                    raise SystemExit(f"{script}: error: {e}") from None
            code = module.main(argv) or 0
        except app.UsageError as e:   # app.run prints it and exits 1
            print(f"{script}: error: {e}", file=sys.stderr)
            code = 1
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
                code = 1
            else:
                code = e.code or 0
    return Result(code, out.getvalue(), err.getvalue())


def process_env(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                **extra)


def run_process(script, *args, timeout=180, cwd=ROOT, env=None):
    """`python script args` in a new process (for signals and workers)."""
    return subprocess.run([sys.executable, str(ROOT / script),
                           *map(str, args)], cwd=cwd, env=env or process_env(),
                          capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
def offline_many(model, segments):
    """Each `(state or None, rows [k, D])` through the model, all in one
    call (padded to a few shapes, so that the compiled model is reused);
    returns the `[k, O]` outputs of each."""
    segments = [(s, np.asarray(r, np.float32)) for s, r in segments]
    n = -(-len(segments) // 128) * 128
    t = -(-max(len(r) for _, r in segments) // 32) * 32
    x = np.zeros((n, t, model.input_dim), np.float32)
    mask = np.zeros((n, t), bool)
    init = [LSTMState(np.array(s.h), np.array(s.c))
            for s in model.initial_state(n)]
    for b, (state, rows) in enumerate(segments):
        x[b, :len(rows)] = rows
        mask[b, :len(rows)] = True
        for layer, given in zip(init, state or ()):
            layer.h[b], layer.c[b] = given.h, given.c
    out, final = model(x, initial_state=tuple(init), mask=mask)
    offline_many.final_state = final  # rows as the segments (masked: kept)
    return [np.asarray(out[b, :len(r)]) for b, (_, r) in enumerate(segments)]


def replicas_config(tmp_path, name, **kwargs):
    """The run that the distribution tests train on one device, on two
    replicas and on two worker processes."""
    from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
    values = dict(model_dir=str(tmp_path / name),
                  model=ModelConfig(units=16, num_layers=2),
                  data=DataConfig(seq_len=10, batch_size=8), train_steps=12,
                  log_every=1, hist_every=1000, checkpoint_every=6,
                  lr_schedule="constant")
    values.update(kwargs)
    return TrainConfig(**values)


# The suite's one small run. Tests that train use this shape unless they
# need another: within a test worker, runs of one shape share XLA's compiled
# programs (a new train step shape costs 2-3 s to compile, the same shape
# again a tenth of that).
TINY_UNITS, TINY_SEQ_LEN, TINY_BATCH = 8, 5, 2


def tiny_config(tmp_path, name="run", **kwargs):
    """A sine run of one layer of 8 units on 2 lanes of 5-step chunks, 6
    steps, in `tmp_path/name`; `kwargs` replace any field (`model=`,
    `data=` whole)."""
    from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
    values = dict(model_dir=str(tmp_path / name),
                  model=ModelConfig(units=TINY_UNITS),
                  data=DataConfig(seq_len=TINY_SEQ_LEN,
                                  batch_size=TINY_BATCH),
                  train_steps=6, log_every=2, hist_every=3,
                  checkpoint_every=3, lr_schedule="constant")
    values.update(kwargs)
    return TrainConfig(**values)
