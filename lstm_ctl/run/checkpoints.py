"""What a checkpoint holds, and saving, listing and restoring checkpoints.

A training checkpoint holds the model (weights, learned initial state,
dropout RNG state), the optimizer (built before restore, so that Adam's slots
are restored too), the step, the carried state and the data iterator: a
resumed run continues exactly where it stopped. TensorFlow writes a
checkpoint's files first and then, atomically, the `checkpoint` index file,
so a crash during a save leaves the last complete checkpoint as the latest.
"""

import os
import re

import tensorflow as tf


CHECKPOINT_NAME = "ckpt"
BEST_DIR = "best"   # <model_dir>/best: the best checkpoint by validation


class CheckpointError(RuntimeError):
    """No checkpoint of a model dir can be read."""


def short_error(e):
    """The first line of a TensorFlow error, without its op context."""
    message = getattr(e, "message", None) or str(e)
    return message.strip().splitlines()[0][:300]


def checkpoint_step(path):
    """The step number a checkpoint path ends in (`.../ckpt-1500` -> 1500)."""
    match = re.search(r"-(\d+)$", path)
    return int(match.group(1)) if match else None


def list_checkpoints(model_dir):
    """All checkpoints the index of `model_dir` lists, oldest first."""
    try:
        state = tf.train.get_checkpoint_state(model_dir)
    except Exception as e:  # a damaged index file: text_format.ParseError
        raise CheckpointError(
            f"the checkpoint index {model_dir}/checkpoint cannot be parsed "
            f"({short_error(e)}); delete it to start over, or fix it to "
            "list the ckpt-N files that are there.") from None
    if state is None and tf.io.gfile.exists(f"{model_dir}/checkpoint"):
        # TensorFlow ignores an index it cannot parse; training would then
        # start over and overwrite the checkpoints it lists.
        raise CheckpointError(
            f"the checkpoint index {model_dir}/checkpoint cannot be parsed; "
            "delete it to start over, or fix it to list the ckpt-N files "
            "that are there.")
    if state is None:
        return []
    # Relative entries of the index come back joined to `model_dir`.
    return list(state.all_model_checkpoint_paths)


def latest_checkpoint(model_dir):
    return tf.train.latest_checkpoint(model_dir)


def restore_readable(restore_fn, model_dir, warn):
    """Restores the newest checkpoint of `model_dir` that can be read.

    A checkpoint whose files are truncated, corrupt or missing is skipped
    with a warning, and the one before it is used. Returns the path restored
    (None when there is no checkpoint); raises CheckpointError when none of
    them can be read. Errors of another kind (a checkpoint of another model)
    are not caught here.
    """
    paths = list_checkpoints(model_dir)
    for path in reversed(paths):
        try:
            restore_fn(path)
            return path
        except (tf.errors.OpError, CheckpointError) as e:
            warn(f"Warning: checkpoint {path} cannot be read "
                 f"({short_error(e)}); falling back to the one before it.")
    if paths:
        raise CheckpointError(
            f"none of the {len(paths)} checkpoints in {model_dir} can be "
            "read (see the warnings above).")
    return None


def best_dir(model_dir):
    return os.path.join(model_dir, BEST_DIR)


def best_checkpoint(model_dir):
    """The best checkpoint (by the validation score of the run's state mode)
    that training kept in `<model_dir>/best`, or None."""
    return tf.train.latest_checkpoint(best_dir(model_dir))


def restore_default(restore_fn, model_dir, validate_on, warn):
    """Restores the checkpoint evaluated when none is named, and returns
    its path: the best one of a run validated on its history
    (`validate_on="history"`: chosen on the history's end, it never saw the
    hold-out; the run's result), else the newest readable one."""
    if validate_on == "history":
        best = best_checkpoint(model_dir)
        if best:
            restore_fn(best)
            return best
    return restore_latest(restore_fn, model_dir, warn)


def restore_latest(restore_fn, model_dir, warn):
    """Restores the newest readable checkpoint (`restore_readable`: older
    ones stand in for a corrupt newest, with a warning) and returns its
    path; without one, the error `require_checkpoint` raises."""
    path = restore_readable(restore_fn, model_dir, warn)
    return path or require_checkpoint(model_dir)


def require_checkpoint(model_dir, checkpoint=None):
    """The checkpoint to use, or a FileNotFoundError that says what is there.
    `checkpoint`: a path, "best" or "latest" (None: the latest)."""
    if checkpoint == "best":
        best = best_checkpoint(model_dir)
        if best is None:
            raise FileNotFoundError(
                f"no best checkpoint in {best_dir(model_dir)!r}: training "
                "keeps one when it validates (--eval_every > 0).")
        return best
    if checkpoint == "latest":
        checkpoint = None
    if checkpoint:
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise FileNotFoundError(f"checkpoint {checkpoint!r} not found "
                                    f"(no {checkpoint}.index).")
        return checkpoint
    latest = latest_checkpoint(model_dir)
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint in {model_dir!r}: train first (python train.py "
            f"--model_dir={model_dir}) or pass --checkpoint=PATH.")
    return latest


class Checkpoints:
    """A CheckpointManager over `model_dir` for the given objects."""

    def __init__(self, model_dir, max_to_keep, **objects):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, model_dir, max_to_keep=max_to_keep,
            checkpoint_name=CHECKPOINT_NAME)

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def save(self, step):
        """Saves as `ckpt-<step>` (the training step, not a save counter)."""
        return self.manager.save(checkpoint_number=int(step))

    def restore(self, path):
        """Restores every object; an object missing from `path` is an error."""
        status = _read(self.checkpoint, path)
        status.assert_existing_objects_matched()
        status.expect_partial()  # the save counter is created on saving
        return status


def restore_model(model, path, model_dir=None):
    """Restores only the model from a training checkpoint (evaluation,
    serving). With `model_dir`, a checkpoint of another model is a
    ValueError naming the run's config.json, and an unreadable one a
    CheckpointError."""
    try:
        status = _read(tf.train.Checkpoint(model=model), path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        if model_dir is None:
            raise
        raise ValueError(
            f"checkpoint {path} does not match the model described by "
            f"{os.path.join(model_dir, 'config.json')}: {e}") from None
    except tf.errors.OpError as e:
        if model_dir is None:
            raise
        raise CheckpointError(f"checkpoint {path} cannot be read "
                              f"({short_error(e)})") from None
    return status


def _read(checkpoint, path):
    """`checkpoint.restore(path)`, where a data file cut short (TensorFlow
    raises a bare IndexError, "Read less bytes than requested") is a
    DataLossError like every other unreadable checkpoint."""
    try:
        return checkpoint.restore(path)
    except IndexError as e:
        raise tf.errors.DataLossError(
            None, None, f"{path}: a data file is cut short ({e})") from None
