"""Dtype policies: bfloat16/float16 compute, float32 variables and state."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel
from lstm_ctl.serve import export
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
from test_model import IMPLEMENTATIONS, random_inputs, random_state

# bfloat16 keeps 8 bits of mantissa (relative error 2^-8 per rounding).
BF16_ATOL = 3e-2


def pair(policy="mixed_bfloat16", **kwargs):
    """A float32 model and one under `policy` with the same weights."""
    kwargs.setdefault("units", 16)
    kwargs.setdefault("output_dim", 3)
    kwargs.setdefault("input_dim", 5)
    full = LSTMModel(**kwargs)
    mixed = LSTMModel(dtype=policy, **kwargs)
    mixed.set_weights(full.get_weights())
    return full, mixed


def assert_float32(state):
    for t in tf.nest.flatten(state):
        assert t.dtype == tf.float32, t.dtype


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_mixed_bfloat16_is_within_bfloat16_tolerance_of_float32(
        implementation):
    full, mixed = pair(num_layers=2, implementation=implementation)
    assert mixed.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in mixed.weights)
    x = random_inputs(4, 12, 5)
    state = random_state(full, 4)
    reset = np.zeros((4, 12), bool)
    reset[1, 5] = True
    expected, expected_final = full(x, initial_state=state, reset_mask=reset)
    out, final = mixed(x, initial_state=state, reset_mask=reset)
    assert out.dtype == tf.float32
    assert_float32(final)
    diff = np.abs(np.asarray(out) - np.asarray(expected)).max()
    assert 1e-5 < diff < BF16_ATOL  # bfloat16 compute, and only that far
    # The LSTM layers themselves (not only the head) compute in bfloat16.
    assert np.abs(np.asarray(final[0].c - expected_final[0].c)).max() > 1e-5
    for a, b in zip(tf.nest.flatten(final), tf.nest.flatten(expected_final)):
        np.testing.assert_allclose(a, b, atol=BF16_ATOL)

    y_t, step_state = mixed.step(x[:, 0], state)
    assert y_t.dtype == tf.float32
    assert_float32(step_state)
    np.testing.assert_allclose(y_t, full.step(x[:, 0], state)[0],
                               atol=BF16_ATOL)


@pytest.mark.parametrize("implementation", ["fused", "loop"])
def test_mixed_bfloat16_gradients_are_close_to_float32(implementation):
    full, mixed = pair(implementation=implementation,
                       initial_state_mode="learned")
    x = random_inputs(3, 10, 5)
    reset = np.zeros((3, 10), bool)
    reset[0, 4] = True
    mask = np.ones((3, 10), bool)
    mask[2, 7:] = False
    grads = []
    for model in (full, mixed):
        with tf.GradientTape() as tape:
            out, final = model(x, reset_mask=reset, mask=mask, training=True)
            loss = tf.reduce_mean(out ** 2) + tf.reduce_mean(final[0].c)
        grads.append(tape.gradient(loss, model.trainable_variables))
    for a, b, v in zip(*grads, full.trainable_variables):
        assert a.dtype == b.dtype == tf.float32
        scale = np.abs(np.asarray(a)).max() + 1e-3
        np.testing.assert_allclose(np.asarray(b) / scale,
                                   np.asarray(a) / scale, atol=BF16_ATOL,
                                   err_msg=v.path)


def test_the_global_policy_applies_and_every_state_is_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = LSTMModel(units=8, output_dim=2, input_dim=5, stateful=True,
                          num_layers=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.compute_dtype == "bfloat16"
    x = random_inputs(2, 6, 5)
    _, final = model(x)
    assert_float32(final)
    assert_float32(model.state)
    model.step(x[:, 0])
    assert_float32(model.state)
    model.reset_state(batch_size=3)
    assert_float32(model.state)
    model.reset_state()
    model(x)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    kept = [name for name, _ in tf.train.list_variables(path)
            if "kept_" in name]
    assert len(kept) == 4
    for name in kept:
        assert tf.train.load_variable(path, name).dtype == np.float32


def test_export_of_a_mixed_model_serves_float32_state(tmp_path):
    full, mixed = pair(num_layers=2)
    export.export_saved_model(mixed, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    state = loaded.signatures["initial_state"](batch_size=tf.constant(2))
    x = random_inputs(2, 4, 5)
    served = loaded.signatures["serve"](inputs=x, **state)
    stepped = loaded.signatures["step"](x_t=x[:, 0], **state)
    for out in (state, served, stepped):
        for name, t in out.items():
            assert t.dtype == tf.float32, name
    np.testing.assert_allclose(served["outputs"], full(x)[0], atol=BF16_ATOL)


def test_mixed_float16_fit_uses_a_loss_scale_optimizer():
    x = random_inputs(16, 8, 2)
    y = np.roll(x[..., :1], 1, axis=1)
    model = LSTMModel(units=8, output_dim=1, input_dim=2,
                      dtype="mixed_float16")
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=8, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0]
    assert model.predict(x, verbose=0).dtype == np.float32


def sine_trainer(tmp_path, precision, steps=60, name=""):
    config = TrainConfig(
        model_dir=str(tmp_path / (precision + name)),
        model=ModelConfig(units=16),
        data=DataConfig(task="sine", seq_len=10, batch_size=8),
        train_steps=steps, learning_rate=0.01, lr_schedule="constant",
        log_every=25, checkpoint_every=1000, precision=precision)
    return trainer.Trainer(config, out=io.StringIO())


def sine_run(tmp_path, precision, steps=60):
    t = sine_trainer(tmp_path, precision, steps)
    return t, t.run()


def test_training_on_sine_in_mixed_bfloat16_reaches_float32s_loss(tmp_path):
    _, full = sine_run(tmp_path, "float32")
    t, mixed = sine_run(tmp_path, "mixed_bfloat16")
    assert t.model.compute_dtype == "bfloat16"
    assert_float32(t.carried.read())
    assert full["final_loss"] < 0.5 * full["losses"][0]  # it learned
    assert abs(mixed["final_loss"] - full["final_loss"]) < (
        0.1 * full["final_loss"]), (mixed["final_loss"], full["final_loss"])


def test_training_in_mixed_float16_scales_the_loss(tmp_path):
    t, result = sine_run(tmp_path, "mixed_float16")
    assert isinstance(t.optimizer, keras.optimizers.LossScaleOptimizer)
    assert t.model.compute_dtype == "float16"
    assert np.isfinite(result["losses"]).all()
    assert result["final_loss"] < 0.5 * result["losses"][0]
    # The step's gradients (clipped, logged) are unscaled: float32's within
    # float16 tolerance.
    grads = []
    for precision in ("float32", "mixed_float16"):
        t = sine_trainer(tmp_path, precision, name="_grads")
        _, _, g = t.train_step(next(t.iterator), t.model.initial_state(8),
                               tf.constant(False))
        grads.append(g)
    for a, b in zip(*grads):
        scale = np.abs(np.asarray(a)).max() + 1e-6
        np.testing.assert_allclose(np.asarray(b) / scale,
                                   np.asarray(a) / scale, atol=1e-2)


def test_a_keras_file_of_a_stateful_mixed_model_after_fit(tmp_path):
    x = random_inputs(4, 5, 3)
    y = random_inputs(4, 5, 2, seed=1)
    model = LSTMModel(units=8, output_dim=2, input_dim=3, stateful=True,
                      dtype="mixed_bfloat16")
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, batch_size=4, shuffle=False, epochs=2, verbose=0)
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    assert loaded.dtype_policy.name == "mixed_bfloat16" and loaded.stateful
    assert loaded.state is None  # a .keras file holds no kept state
    model.reset_state()
    for _ in range(2):  # the second call continues the kept state
        np.testing.assert_array_equal(loaded.predict(x, verbose=0),
                                      model.predict(x, verbose=0))


def test_an_unknown_precision_is_refused():
    from lstm_ctl import config as config_lib
    with pytest.raises(ValueError, match="precision must be one of"):
        config_lib.validate(TrainConfig(precision="float8"))
