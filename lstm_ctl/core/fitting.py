"""LSTMModel in Keras's own workflow: compile / fit / evaluate / predict.

`call` returns `(outputs, final_state)`; Keras's steps see only `outputs`:
losses and metrics get `outputs [B, T, O]` as `y_pred`, and `predict`
returns them as one array. A stateful model continues from its kept state
batch after batch (truncated backprop through time: the kept state enters
through `tf.stop_gradient`); `lstm_ctl.callbacks.ResetState` says when it
starts over. During `fit`, validation starts from the initial state and the
training state is put back after it.

`Fitting` holds all of this; LSTMModel overrides Keras's methods with one
line each that hands Keras's own method to it.
"""

import contextlib

import keras
import tensorflow as tf

BATCH_MESSAGE = (
    "stateful {}: a batch of {{}} rows follows batches of {{}} rows, so the "
    "kept state has no row for some streams. Give a number of rows that "
    "batch_size divides, or a tf.data.Dataset batched with "
    "drop_remainder=True (or reset the state before every batch: "
    "lstm_ctl.callbacks.ResetState(\"batch\")).")


def outputs_of(y_pred):
    """`outputs` from what `call` returns, `(outputs, final_state)`."""
    if isinstance(y_pred, (tuple, list)) and len(y_pred) == 2:
        return y_pred[0]
    return y_pred


class Fitting:
    """What LSTMModel changes in Keras's steps and fit/evaluate/predict.

    Keras calls these methods on the model; the model's own overrides hand
    each one Keras's implementation (`super()`'s method, `keras_...` here)
    and its arguments, and this object calls it with what lstm_ctl changes.

    Args:
      kept: the model's `stateful.KeptState`, or None for a model built
        with stateful=False.
    """

    def __init__(self, kept):
        self.kept = kept
        self.inside_fit = False  # validation inside fit (see `evaluate`)

    def compute_loss(self, keras_compute_loss, x, y, y_pred, sample_weight,
                     training):
        return keras_compute_loss(x=x, y=y, y_pred=outputs_of(y_pred),
                                  sample_weight=sample_weight,
                                  training=training)

    def compute_metrics(self, keras_compute_metrics, x, y, y_pred,
                        sample_weight):
        return keras_compute_metrics(x, y, outputs_of(y_pred),
                                     sample_weight=sample_weight)

    def _batch_checked(self, data, job):
        """A stateful model's batch must match its kept state (or nothing is
        kept): the last, smaller batch of an epoch is this error, before
        anything of the step runs."""
        if self.kept is None:
            return contextlib.nullcontext()
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        kept = self.kept.batch_size()
        ok = tf.logical_or(tf.equal(kept, 0), tf.equal(kept, batch))
        check = tf.debugging.Assert(ok, [tf.strings.format(
            BATCH_MESSAGE.format(job), (batch, kept))])
        return tf.control_dependencies([check])

    def train_step(self, keras_train_step, data):
        with self._batch_checked(data, "fit"):
            return keras_train_step(data)

    def test_step(self, keras_test_step, data):
        with self._batch_checked(data, "evaluate"):
            return keras_test_step(data)

    def predict_step(self, keras_predict_step, data):
        with self._batch_checked(data, "predict"):
            return outputs_of(keras_predict_step(data))

    def _check_rows(self, job, x, batch_size, callbacks):
        """Arrays given to a stateful model must fill every batch (checked
        before anything runs; datasets are checked batch by batch)."""
        if self.kept is None or not hasattr(x, "shape") or isinstance(
                x, tf.data.Dataset):
            return
        if any(getattr(c, "every", None) == "batch" for c in callbacks or ()):
            return  # every batch starts over: any batch size will do
        rows, batch_size = int(x.shape[0]), batch_size or 32
        if rows > batch_size and rows % batch_size:  # one batch is fine
            raise ValueError(
                f"stateful {job}: {rows} rows do not divide into batches of "
                f"{batch_size}, and the last batch of {rows % batch_size} "
                "rows would find no kept state for its streams. Give a "
                "number of rows that batch_size divides, or a "
                "tf.data.Dataset batched with drop_remainder=True.")

    def fit(self, keras_fit, x, y, batch_size, *args, **kwargs):
        self._check_rows("fit", x, batch_size, kwargs.get("callbacks"))
        self.inside_fit = True
        try:
            return keras_fit(x, y, batch_size, *args, **kwargs)
        finally:
            self.inside_fit = False

    def evaluate(self, keras_evaluate, x, y, batch_size, *args, **kwargs):
        if self.kept is None or not self.inside_fit:
            self._check_rows("evaluate", x, batch_size,
                             kwargs.get("callbacks"))
            return keras_evaluate(x, y, batch_size, *args, **kwargs)
        # Validation inside fit: its streams are not the training streams.
        kept = self.kept.value()
        self.kept.clear()
        try:
            return keras_evaluate(x, y, batch_size, *args, **kwargs)
        finally:
            self.kept.keep(kept)

    def predict(self, keras_predict, x, batch_size, *args, **kwargs):
        self._check_rows("predict", x, batch_size, kwargs.get("callbacks"))
        return keras_predict(x, batch_size, *args, **kwargs)
