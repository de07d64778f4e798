"""Trainer promises with checks that can fail: --reset_every=N for N > 1 on
every layer's h and c, the state restarting after a skipped non-finite
step, gradient clipping and the cosine learning rate. (Resume refused on
other settings: test_trainer.py; loading without pickle:
test_reliability.py.)"""

import io
import math
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl.train import trainer
from lstm_ctl.config import ModelConfig
from helpers import NaNAt, frozen_trainer as frozen, scalars, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
ATOL = 1e-5


def tiny(tmp_path, name="run", **kwargs):
    values = dict(model=ModelConfig(units=8, num_layers=2), train_steps=5,
                  log_every=1, hist_every=100, checkpoint_every=100)
    values.update(kwargs)
    return tiny_config(tmp_path, name, **values)



def chunks_state(t, first, last):
    """The model's own final state over chunks first..last-1 of the train
    lanes, from the initial state (the data's stream starts as resets)."""
    seq = t.config.data.seq_len
    a = t.arrays
    _, state = t.model(a.inputs[:, first * seq:last * seq],
                       reset_mask=a.resets[:, first * seq:last * seq])
    return state


def assert_state(got, want):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.h, w.h, atol=ATOL)
        np.testing.assert_allclose(g.c, w.c, atol=ATOL)


def differs(a, b):
    return max(float(np.abs(np.asarray(x.c) - np.asarray(y.c)).max())
               for x, y in zip(a, b)) > 1e-4


def test_reset_every_three_restarts_all_layers_every_third_batch(tmp_path):
    t = frozen(tiny(tmp_path, reset_every=3))
    t.run()
    got = t.carried.read()
    # Batches 0-2 carry, batch 3 restarts, batch 4 carries from batch 3.
    assert_state(got, chunks_state(t, 3, 5))
    assert differs(got, chunks_state(t, 4, 5))   # not every batch
    assert differs(got, chunks_state(t, 0, 5))   # not never


def test_skipped_nonfinite_step_restarts_the_carried_state(tmp_path):
    t = frozen(tiny(tmp_path, skip_nonfinite=True, train_steps=4))
    t.iterator = NaNAt(t.iterator, step=3)
    assert t.run()["nonfinite_steps"] == 1
    got = t.carried.read()
    # Step 3 was skipped and the state restarted: step 4 starts from the
    # initial state, not from step 2's or step 3's final state.
    assert_state(got, chunks_state(t, 3, 4))
    assert differs(got, chunks_state(t, 0, 4))


def test_clip_norm_scales_the_gradient_to_the_norm(tmp_path):
    grads, norms = {}, {}
    for clip in (0.0, 0.01):
        t = trainer.Trainer(tiny(tmp_path, name=f"clip{clip}",
                                 clip_norm=clip), out=io.StringIO())
        metrics, _, g = t.train_step(next(t.iterator),
                                     t.model.initial_state(t.config.data.batch_size),
                                     tf.constant(False))
        grads[clip] = [np.asarray(x) for x in g]
        norms[clip] = float(metrics["grad_norm"])
    flat = np.concatenate([g.ravel() for g in grads[0.0]])
    # grad_norm is the norm before clipping; the same weights and batch.
    assert norms[0.0] == pytest.approx(np.linalg.norm(flat), rel=1e-5)
    assert norms[0.01] == pytest.approx(norms[0.0], rel=1e-5)
    assert norms[0.0] > 0.05
    for clipped, plain in zip(grads[0.01], grads[0.0]):
        np.testing.assert_allclose(clipped, plain * 0.01 / norms[0.0],
                                   atol=1e-7)


def cosine(lr, step, total, alpha=0.05):
    """The README's schedule: cosine decay to 5% over --train_steps."""
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / total))
                 + alpha)


def test_cosine_learning_rate_values(tmp_path):
    config = tiny(tmp_path, lr_schedule="cosine", learning_rate=0.02,
                  train_steps=8, model=ModelConfig(units=4))
    trainer.train(config, out=io.StringIO())
    logged = scalars(config.model_dir, "learning_rate")
    assert sorted(logged) == list(range(1, 9))
    for step, lr in logged.items():   # the rate the step's update used
        assert lr == pytest.approx(cosine(0.02, step - 1, 8), rel=1e-5)
