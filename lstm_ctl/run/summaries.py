"""TensorBoard writing: scalars, histograms, the run's config and hparams.

Tags (under `<model_dir>/train`):
- scalars: `loss`, the task metric (`rmse`, `bpc` or `mae`),
  `learning_rate`, `grad_norm`, `steps_per_sec`, `examples_per_sec`;
- histograms: `weights/<variable>`, `gradients/<variable>` (variables by
  their path inside the model, e.g. `cell_0/kernel`, `head/bias`),
  `state/h_<layer>`, `state/c_<layer>` (the carried state);
- text `config` (the config as JSON) and the HParams plugin's session data.
Under `<model_dir>/eval`: the image `predictions` (a PNG figure) per
checkpoint.
"""

import json
import os

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp


def flat_hparams(config_dict, prefix=""):
    """Flattens a nested config dict to the scalar values HParams accepts."""
    out = {}
    for key, value in config_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        elif value is None:
            out[name] = ""
        else:
            out[name] = value
    return out


def _name(var):
    """A variable's path inside its model: `cell_0/kernel`, `head/bias`."""
    return var.path.split("/", 1)[-1]


class Writer:
    """A TensorBoard writer for one run directory."""

    def __init__(self, logdir):
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        self.writer = tf.summary.create_file_writer(logdir)

    def scalars(self, step, values):
        with self.writer.as_default(step=int(step)):
            for name, value in values.items():
                tf.summary.scalar(name, float(value))

    def histograms(self, step, model, gradients=None, state=None):
        with self.writer.as_default(step=int(step)):
            for var in model.trainable_variables:
                tf.summary.histogram(f"weights/{_name(var)}", var)
            if gradients is not None:
                for var, grad in zip(model.trainable_variables, gradients):
                    if grad is not None:
                        tf.summary.histogram(f"gradients/{_name(var)}", grad)
            for i, layer_state in enumerate(state or ()):
                tf.summary.histogram(f"state/h_{i}", layer_state.h)
                tf.summary.histogram(f"state/c_{i}", layer_state.c)

    def image(self, step, name, png):
        """A PNG image (bytes) for the Images tab."""
        with self.writer.as_default(step=int(step)):
            tf.summary.image(name, tf.io.decode_png(png)[None])

    def config(self, config_dict, step=0):
        """The run's config as text and as HParams (once per run)."""
        with self.writer.as_default(step=step):
            text = json.dumps(config_dict, indent=2, sort_keys=True)
            tf.summary.text("config", "```\n" + text + "\n```")
            hp.hparams(flat_hparams(config_dict),
                       trial_id=config_dict.get("model_dir"))

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()
