"""TensorBoard writing: scalars, histograms, the run's config and hparams.

Tags (under `<model_dir>/train`):
- scalars: `loss`, the task metric (`rmse`, `bpc` or `mae`),
  `learning_rate`, `grad_norm`, `steps_per_sec`, `examples_per_sec`;
- histograms: `weights/<variable>`, `gradients/<variable>` (variables by
  their path inside the model, e.g. `cell_0/kernel`, `head/bias`),
  `state/h_<layer>`, `state/c_<layer>` (the carried state);
- text `config` (the config as JSON) and the HParams plugin's session data.
Under `<model_dir>/eval/<warmup>/<mode>` (`PointWriter`, one run per
warm-up setting and state mode): `loss` and the metric, one point per
checkpoint step; under `<model_dir>/eval/<warmup>`: the image `predictions`
(a PNG figure) per checkpoint.
"""

import contextlib
import fcntl
import glob
import json
import os
import shutil

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


POINTS_FILE = "points.json"


@contextlib.contextmanager
def _locked(logdir):
    with open(os.path.join(logdir, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class PointWriter:
    """A TensorBoard run that holds one point per (tag, step): writing a
    step again replaces its value instead of adding a second point.

    The points live in `<logdir>/points.json` (PNG images as files under
    `<logdir>/images/`); each flush rewrites the run's one event file from
    them, under a file lock, so training's validation and `evaluate.py`
    can write the same run. (A TensorBoard already running keeps what it
    read before; it shows the replaced values after a reload.)
    """

    def __init__(self, logdir):
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        self.pending = {"scalars": {}, "images": {}}

    def scalars(self, step, values):
        for name, value in values.items():
            self.pending["scalars"].setdefault(name, {})[str(int(step))] = \
                float(value)

    def image(self, step, name, png):
        self.pending["images"].setdefault(name, {})[str(int(step))] = png

    def _load(self):
        path = os.path.join(self.logdir, POINTS_FILE)
        if os.path.exists(path):
            with open(path) as f:
                try:
                    return json.load(f)
                except json.JSONDecodeError:
                    pass
        return {"scalars": {}, "images": {}}

    def flush(self):
        if not any(self.pending.values()):
            return
        with _locked(self.logdir):
            points = self._load()
            for tag, values in self.pending["scalars"].items():
                points["scalars"].setdefault(tag, {}).update(values)
            for tag, values in self.pending["images"].items():
                folder = os.path.join(self.logdir, "images", tag)
                os.makedirs(folder, exist_ok=True)
                for step, png in values.items():
                    with open(os.path.join(folder, f"{step}.png"), "wb") as f:
                        f.write(png)
                    steps = points["images"].setdefault(tag, [])
                    if step not in steps:
                        steps.append(step)
            self._rewrite(points)
            path = os.path.join(self.logdir, POINTS_FILE)
            with open(path + ".tmp", "w") as f:
                json.dump(points, f)
            os.replace(path + ".tmp", path)
        self.pending = {"scalars": {}, "images": {}}

    def _rewrite(self, points):
        tmp = os.path.join(self.logdir, f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        writer = tf.summary.create_file_writer(tmp)
        steps = sorted({int(s) for v in points["scalars"].values() for s in v}
                       | {int(s) for v in points["images"].values()
                          for s in v})
        with writer.as_default():
            for step in steps:
                for tag, values in sorted(points["scalars"].items()):
                    if str(step) in values:
                        tf.summary.scalar(tag, values[str(step)], step=step)
                for tag, done in sorted(points["images"].items()):
                    if str(step) in done:
                        png = os.path.join(self.logdir, "images", tag,
                                           f"{step}.png")
                        with open(png, "rb") as f:
                            tf.summary.image(tag, tf.io.decode_png(
                                f.read())[None], step=step)
        writer.close()
        old = glob.glob(os.path.join(self.logdir, "events.out.tfevents.*"))
        new = []
        for path in glob.glob(os.path.join(tmp, "events.out.tfevents.*")):
            new.append(os.path.join(self.logdir, os.path.basename(path)))
            os.replace(path, new[-1])
        for path in set(old) - set(new):
            os.remove(path)
        shutil.rmtree(tmp, ignore_errors=True)

    def close(self):
        self.flush()
