"""A run dir -> the model to serve and its units.

config.json -> model (`run.builders`), the task files -> units
(`data.units`), a checkpoint -> weights (`run.checkpoints`): the same
lower-floor functions evaluation uses, so a served model is the evaluated
one.
"""

import dataclasses
import glob
import os

import tensorflow as tf

from lstm_ctl import config as config_lib
from lstm_ctl.data import task_classes
from lstm_ctl.data import units as units_lib
from lstm_ctl.run import checkpoints
from lstm_ctl.run.builders import build_model

BEST_DIR = "best"


@dataclasses.dataclass
class Served:
    model: object           # LSTMModel, weights restored
    units: units_lib.Units  # request rows <-> model inputs/outputs
    checkpoint: str         # the checkpoint restored
    config: config_lib.TrainConfig


def resolve_checkpoint(model_dir, checkpoint="latest"):
    """`latest`, `best` (the newest checkpoint in `<model_dir>/best/`) or a
    checkpoint path -> the path to restore; a clear error when absent."""
    checkpoint = checkpoint or "latest"
    if checkpoint == "latest":
        return checkpoints.require_checkpoint(model_dir)
    if checkpoint == "best":
        best = os.path.join(model_dir, BEST_DIR)
        if not os.path.isdir(best):
            raise FileNotFoundError(
                f"--checkpoint=best: {best} does not exist (no best "
                "checkpoint was written for this run); use "
                "--checkpoint=latest or a checkpoint path.")
        path = tf.train.latest_checkpoint(best)
        if path is None:  # no index file: the newest checkpoint there
            found = sorted(glob.glob(os.path.join(best, "*.index")),
                           key=os.path.getmtime)
            if not found:
                raise FileNotFoundError(f"--checkpoint=best: {best} holds "
                                        "no checkpoint.")
            path = found[-1][:-len(".index")]
        return path
    return checkpoints.require_checkpoint(model_dir, checkpoint)


def load(model_dir, checkpoint="latest"):
    """The model of `model_dir` with the weights of `checkpoint`."""
    config = config_lib.load(model_dir)
    task = task_classes.from_run(config, model_dir)
    model = build_model(config, task)
    path = resolve_checkpoint(model_dir, checkpoint)
    checkpoints.restore_model(model, path, model_dir)
    return Served(model, units_lib.Units(task), path, config)
