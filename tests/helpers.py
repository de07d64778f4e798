"""Fault injection and trainer set-ups that several test modules use."""

import io

import numpy as np
import tensorflow as tf

from lstm_ctl import trainer


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
