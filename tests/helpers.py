"""Fault injection, trainer set-ups and TensorBoard reading that several
test modules use."""

import io
import pathlib

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator)
from tensorboard.util import tensor_util

from lstm_ctl.core.state import LSTMState
from lstm_ctl.train import trainer


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
