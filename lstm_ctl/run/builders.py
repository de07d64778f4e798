"""Config -> model, optimizer and batch signature: what the trainer,
evaluation and export build alike, so that none imports another."""

import keras
import tensorflow as tf

from lstm_ctl.core.model import LSTMModel
from lstm_ctl.core.state import LSTMState


def build_model(config, task):
    """The model of `config`; an ensemble's (`ensemble=K`) is its K
    members side by side, K times the units (run/merged.py)."""
    m = config.model
    return LSTMModel(units=m.units * config.ensemble,
                     output_dim=task.output_dim,
                     num_layers=m.num_layers, dropout=m.dropout,
                     recurrent_dropout=m.recurrent_dropout,
                     initial_state_mode=m.initial_state_mode,
                     input_dim=task.input_dim, seed=config.seed,
                     dtype=config.precision)


def build_optimizer(config):
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=config.train_steps, alpha=0.05)
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    if config.precision == "mixed_float16":  # float16 gradients underflow
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def batch_signature(task, model):
    targets = task.target_spec()   # [B, T] ids or [B, T, O] values
    state = tuple(LSTMState(tf.TensorSpec([None, model.units], tf.float32),
                            tf.TensorSpec([None, model.units], tf.float32))
                  for _ in range(model.num_layers))
    batch = {"inputs": tf.TensorSpec([None, None, task.input_dim], tf.float32),
             "targets": targets,
             "reset_mask": tf.TensorSpec([None, None], tf.bool),
             "weights": tf.TensorSpec([None, None], tf.float32)}
    return batch, state
