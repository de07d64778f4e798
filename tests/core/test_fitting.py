"""Keras's workflow on LSTMModel: compile/fit/evaluate/predict on outputs,
stateful fit as truncated BPTT, ResetState, callbacks, .keras files."""

import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel
from lstm_ctl.train import trainer
from lstm_ctl.callbacks import ResetState
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
from test_model import ATOL, random_inputs


def delay_task(rows=48, steps=12, seed=0):
    """y_t = x_{t-2}: needs memory, learnable by a small LSTM."""
    x = random_inputs(rows, steps, 2, seed=seed)
    y = np.zeros((rows, steps, 1), "float32")
    y[:, 2:, 0] = x[:, :-2, 0]
    return x, y


def make(stateful=False, **kwargs):
    kwargs.setdefault("units", 8)
    kwargs.setdefault("output_dim", 1)
    keras.utils.set_random_seed(1)
    return LSTMModel(input_dim=2, stateful=stateful, **kwargs)


class BatchLosses(keras.callbacks.Callback):
    """Each train batch's own loss (Keras logs the epoch's running mean)."""

    def on_train_begin(self, logs=None):
        self.losses, self._means = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._means = []

    def on_train_batch_end(self, batch, logs=None):
        k = len(self._means)
        self._means.append(logs["loss"])
        previous = self._means[-2] * k if k else 0.0
        self.losses.append((k + 1) * self._means[-1] - previous)


def mse(outputs, y, weights=None):
    se = np.mean((np.asarray(outputs) - y) ** 2, axis=-1)  # [B, T]
    if weights is not None:
        se = se * weights
    return se.sum() / se.size  # Keras: sum over the batch's B * T values


# ------------------------------------------------------ compile/fit/predict
def test_fit_lowers_the_loss_on_a_learnable_task():
    x, y = delay_task()
    model = make(units=16)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    before = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=8, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert after < 0.3 * before, (before, after)


def test_evaluate_is_the_mean_loss_by_hand_with_sample_weights():
    x, y = delay_task(rows=7)
    weights = np.random.default_rng(2).uniform(size=(7, 12)).astype("float32")
    model = make()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    loss, mae = model.evaluate(x, y, sample_weight=weights, batch_size=3,
                               verbose=0)
    outputs = np.asarray(model(x)[0])
    # Batches of 3, 3, 1; the epoch's loss is their mean weighted by rows.
    per_batch = [mse(outputs[i:i + 3], y[i:i + 3], weights[i:i + 3])
                 for i in (0, 3, 6)]
    np.testing.assert_allclose(loss, np.dot(per_batch, [3, 3, 1]) / 7,
                               rtol=1e-5)
    # `metrics` are unweighted in Keras (`weighted_metrics` are not).
    np.testing.assert_allclose(mae, np.abs(outputs - y).mean(), rtol=1e-5)


def test_predict_equals_the_call_for_every_row_at_any_batch_size():
    x, _ = delay_task(rows=10)
    model = make(num_layers=2)
    expected = np.asarray(model(x)[0])
    for batch_size in (4, 10, 3):  # 4 and 3 do not divide 10 rows
        got = model.predict(x, batch_size=batch_size, verbose=0)
        assert isinstance(got, np.ndarray) and got.shape == (10, 12, 1)
        np.testing.assert_allclose(got, expected, atol=ATOL)
    np.testing.assert_allclose(model.predict_on_batch(x[:3]), expected[:3],
                               atol=ATOL)


def test_train_on_batch_returns_the_loss_before_its_update():
    x, y = delay_task(rows=4)
    model = make()
    model.compile(optimizer="sgd", loss="mse")
    expected = mse(model(x)[0], y)
    np.testing.assert_allclose(model.train_on_batch(x, y), expected,
                               rtol=1e-5)
    assert mse(model(x)[0], y) < expected  # the update was applied


# ------------------------------------------------------------ stateful fit
def test_stateful_fit_equals_the_trainer_in_carry_mode(tmp_path):
    batches, seq_len = 6, 5
    config = TrainConfig(
        model_dir=str(tmp_path / "run"), model=ModelConfig(units=8),
        data=DataConfig(task="sine", seq_len=seq_len, batch_size=4),
        train_steps=batches, learning_rate=0.01, lr_schedule="constant",
        clip_norm=0.0, state_mode="carry", log_every=1, checkpoint_every=100)
    t = trainer.Trainer(config, out=io.StringIO())
    data = list(t.dataset.take(batches).as_numpy_iterator())
    # Streams start at step 0 of batch 0 (from the initial state anyway).
    assert not data[0]["reset_mask"][:, 1:].any()
    assert not any(b["reset_mask"].any() for b in data[1:])
    assert all((b["weights"] == 1).all() for b in data)
    # Batch k of fit is chunk k of the 4 parallel streams.
    x = np.concatenate([b["inputs"] for b in data])
    y = np.concatenate([b["targets"] for b in data])
    model = LSTMModel(units=8, output_dim=t.task.output_dim,
                      input_dim=t.task.input_dim, stateful=True)
    model.set_weights(t.model.get_weights())
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    expected = t.run()["losses"]

    record = BatchLosses()
    model.fit(x, y, batch_size=4, shuffle=False, verbose=0,
              callbacks=[record])
    np.testing.assert_allclose(record.losses, expected, atol=1e-5)
    for a, b in zip(model.get_weights(), t.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_stateful_fit_with_a_last_smaller_batch_is_a_clear_error():
    x, y = delay_task(rows=10)
    model = make(stateful=True)
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="10 rows do not divide into batches "
                                         "of 4.*drop_remainder=True"):
        model.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    assert model.state is None  # nothing ran
    # A dataset with a smaller last batch fails at that batch.
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="a batch of 2 rows follows batches of 4 rows"):
        model.fit(ds, shuffle=False, verbose=0)
    # Resetting before every batch makes any batch size fine.
    model.reset_state()
    out = model.predict(x, batch_size=4, verbose=0,
                        callbacks=[ResetState("batch")])
    np.testing.assert_allclose(out, model(x, initial_state=model.initial_state(
        10))[0], atol=ATOL)


def test_stateful_fit_runs_without_xla_even_when_asked():
    x, y = delay_task(rows=8)
    model = make(stateful=True)
    with pytest.warns(UserWarning, match="jit_compile=False"):
        model.compile(optimizer="adam", loss="mse", jit_compile=True)
    assert not model.jit_compile
    losses = model.fit(x, y, batch_size=4, shuffle=False, epochs=2,
                       verbose=0).history["loss"]
    assert np.isfinite(losses).all()


def frozen(model):
    """Compiled with a zero learning rate: fit runs, weights stay put."""
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model


def hand_losses(model, x, y, batch_size, resets):
    """Per-batch losses with the state carried by hand, restarted before
    the batches (global indices) in `resets`."""
    losses, state = [], None
    for k in range(len(x) // batch_size):
        rows = slice(k * batch_size, (k + 1) * batch_size)
        if k in resets or state is None:
            state = model.initial_state(batch_size)
        outputs, state = model(x[rows], initial_state=state)
        losses.append(mse(outputs, y[rows]))
    return losses


@pytest.mark.parametrize("every, resets", [
    ("epoch", {0, 3}), ("batch", set(range(6))), (2, {0, 2, 4})])
def test_reset_state_callback_in_fit_resets_exactly_when_it_says(every,
                                                                 resets):
    x, y = delay_task(rows=12, steps=4)
    model = frozen(make(stateful=True))
    record = BatchLosses()
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              callbacks=[ResetState(every), record])
    # Two epochs of the same 3 batches, as 6 batches in a row.
    expected = hand_losses(model, np.concatenate([x, x]),
                           np.concatenate([y, y]), 4, resets)
    np.testing.assert_allclose(record.losses, expected, atol=1e-5)
    # Without it, the state carries over the epoch boundary.
    assert not np.allclose(expected, hand_losses(
        model, np.concatenate([x, x]), np.concatenate([y, y]), 4, {0}),
        atol=1e-5)


def test_reset_state_callback_in_predict_and_evaluate():
    x, y = delay_task(rows=12, steps=4)
    model = frozen(make(stateful=True))
    fresh = model.predict(x, batch_size=4, verbose=0,
                          callbacks=[ResetState()])
    carried = model.predict(x, batch_size=4, verbose=0)  # continues
    again = model.predict(x, batch_size=4, verbose=0,
                          callbacks=[ResetState()])
    np.testing.assert_allclose(again, fresh, atol=ATOL)
    assert np.abs(carried - fresh).max() > 1e-3
    per_batch = model.predict(x, batch_size=4, verbose=0,
                              callbacks=[ResetState("batch")])
    np.testing.assert_allclose(per_batch, model(x, initial_state=(
        model.initial_state(12)))[0], atol=ATOL)
    loss = model.evaluate(x, y, batch_size=4, verbose=0,
                          callbacks=[ResetState(2)])
    np.testing.assert_allclose(loss, np.mean(hand_losses(model, x, y, 4,
                                                         {0, 2})), rtol=1e-5)


def test_reset_state_callback_errors():
    with pytest.raises(ValueError, match="must be one of.*positive integer"):
        ResetState("step")
    model = frozen(make())
    x, y = delay_task(rows=4)
    with pytest.raises(ValueError, match="needs a model built with "
                                         "stateful=True"):
        model.fit(x, y, verbose=0, callbacks=[ResetState()])


def test_validation_in_stateful_fit_leaves_the_training_state_alone():
    x, y = delay_task(rows=8, steps=4)
    runs = []
    for validation in (None, delay_task(rows=4, steps=4, seed=5)):
        model = make(stateful=True)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False,
                            verbose=0, validation_data=validation)
        runs.append((history.history["loss"], model.state[0].h))
    assert "val_loss" in history.history
    np.testing.assert_allclose(runs[1][0], runs[0][0], atol=1e-6)
    np.testing.assert_allclose(runs[1][1], runs[0][1], atol=1e-6)


# ------------------------------------------------------ callbacks and files
def test_keras_callbacks_and_a_keras_file_saved_after_fit(tmp_path):
    x, y = delay_task(rows=8)
    model = make(num_layers=2)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    path = str(tmp_path / "best.keras")
    history = model.fit(
        x, y, batch_size=4, epochs=6, verbose=0, validation_data=(x, y),
        callbacks=[
            keras.callbacks.TensorBoard(str(tmp_path / "tb")),
            keras.callbacks.ModelCheckpoint(path),
            keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
            keras.callbacks.EarlyStopping(monitor="loss", patience=0,
                                          min_delta=1e9)])
    assert len(history.history["loss"]) == 2  # stopped early
    assert os.listdir(tmp_path / "tb" / "train")
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=ATOL)
    model.save(str(tmp_path / "m.keras"))
    again = keras.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(again.predict(x, batch_size=3, verbose=0),
                               model(x)[0], atol=ATOL)
    # Training goes on from the loaded optimizer state.
    np.testing.assert_allclose(again.fit(x, y, epochs=1, verbose=0,
                                         shuffle=False).history["loss"],
                               model.fit(x, y, epochs=1, verbose=0,
                                         shuffle=False).history["loss"],
                               rtol=1e-5)
