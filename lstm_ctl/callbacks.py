"""Keras callbacks for stateful LSTMModels."""

import keras

EVERY = ("epoch", "batch")


class ResetState(keras.callbacks.Callback):
    """Resets a stateful model's kept state (`model.reset_state()`) in
    `fit`, `evaluate` and `predict`.

    - `every="epoch"` (default): before every epoch of `fit`, and at the
      start of `evaluate` and `predict`;
    - `every="batch"`: before every batch (each batch starts from the
      initial state);
    - `every=N`: before batches 0, N, 2N, ... counted over the whole run
      (across epochs), as `train.py --reset_every=N` counts steps.
    """

    def __init__(self, every="epoch"):
        super().__init__()
        if not (every in EVERY or (isinstance(every, int)
                                   and not isinstance(every, bool)
                                   and every >= 1)):
            raise ValueError(f"ResetState(every=...) must be one of {EVERY} "
                             f"or a positive integer (batches); got "
                             f"{every!r}.")
        self.every = every
        self._counts = {}

    def set_model(self, model):
        if not getattr(model, "stateful", False):
            raise ValueError("ResetState needs a model built with "
                             "stateful=True; this model keeps no state.")
        super().set_model(model)

    def _start(self, mode):
        self._counts[mode] = 0
        if self.every == "epoch" and mode != "train":
            self.model.reset_state()

    def _batch(self, mode):
        count = self._counts[mode]
        if self.every == "batch" or (isinstance(self.every, int)
                                     and count % self.every == 0):
            self.model.reset_state()
        self._counts[mode] = count + 1

    def on_epoch_begin(self, epoch, logs=None):
        if self.every == "epoch":
            self.model.reset_state()

    def on_train_begin(self, logs=None):
        self._start("train")

    def on_train_batch_begin(self, batch, logs=None):
        self._batch("train")

    def on_test_begin(self, logs=None):
        self._start("test")

    def on_test_batch_begin(self, batch, logs=None):
        self._batch("test")

    def on_predict_begin(self, logs=None):
        self._start("predict")

    def on_predict_batch_begin(self, batch, logs=None):
        self._batch("predict")
