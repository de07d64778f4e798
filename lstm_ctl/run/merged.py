"""An ensemble as one run: its members side by side in one model
(`core.side_by_side`), written in the ensemble's own dir, so that
`evaluate.py`, `serve.py` and `--export_dir` take the ensemble's dir as
they take any run's.

The ensemble's dir then holds what a run's does: `config.json` (the
members' settings, `ensemble=K`; `build_model` builds K times the units),
the task files and run.json of its first member (every member read the
same data) and a checkpoint `ckpt-<step>` of the merged weights: each
member at the checkpoint evaluated by default (`checkpoints.
restore_default`), `<step>` the newest of theirs.
"""

import dataclasses
import os
import shutil

from lstm_ctl import config as config_lib
from lstm_ctl.core import side_by_side
from lstm_ctl.data import task_base
from lstm_ctl.data import task_classes
from lstm_ctl.run import checkpoints
from lstm_ctl.run import holdout
from lstm_ctl.run.builders import build_model

# What evaluation and serving read from a run's dir besides config.json.
RUN_FILES = (task_base.NORM_FILE, task_base.VOCAB_FILE,
             task_base.STREAMS_FILE, holdout.RUN_FILE)


def write(model_dir, member_dirs, warn=print):
    """Writes the merged model of the trained members `member_dirs` in
    `model_dir`; returns the checkpoint's path."""
    first = config_lib.load(member_dirs[0])
    config = dataclasses.replace(
        first, model_dir=os.path.abspath(model_dir),
        ensemble=len(member_dirs))
    for name in RUN_FILES:
        path = os.path.join(member_dirs[0], name)
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(model_dir, name))
    config_lib.save(config, model_dir)
    task = task_classes.from_run(config, model_dir)
    models, steps = [], []
    for member in member_dirs:
        model = build_model(config_lib.load(member), task)
        path = checkpoints.restore_default(
            lambda p, m=model, d=member: checkpoints.restore_model(m, p, d),
            member, first.validate_on, warn)
        models.append(model)
        steps.append(checkpoints.checkpoint_step(path) or 0)
    merged = side_by_side.merge(models, build_model(config, task))
    saver = checkpoints.Checkpoints(model_dir, max_to_keep=1, model=merged)
    return saver.save(max(steps))
