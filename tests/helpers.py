"""Fault injection, trainer set-ups and TensorBoard reading that several
test modules use."""

import io
import pathlib

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator)
from tensorboard.util import tensor_util

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
