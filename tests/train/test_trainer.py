"""The trainer: state policy, compiled step, TensorBoard, checkpoints."""

import dataclasses
import io
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator)

from lstm_ctl.run import checkpoints
from lstm_ctl.train import step as step_lib
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig, ModelConfig
from helpers import (TINY_UNITS, frozen_trainer, set_grappler,
                     tiny_config)

ATOL = 1e-5


@pytest.mark.parametrize("num_layers", [1, 2])
def test_carried_state_equals_the_models_own_chunked_run(tmp_path,
                                                        num_layers):
    config = tiny_config(tmp_path, model=ModelConfig(units=TINY_UNITS,
                                                     num_layers=num_layers),
                         train_steps=5)
    t = frozen_trainer(config)
    t.run()
    carried = t.carried.read()
    a = t.arrays
    steps = 5 * config.data.seq_len
    _, expected = t.model(a.inputs[:, :steps],
                          reset_mask=a.resets[:, :steps])
    for got, want in zip(carried, expected):
        np.testing.assert_allclose(got.h, want.h, atol=ATOL)
        np.testing.assert_allclose(got.c, want.c, atol=ATOL)


def test_reset_every_restarts_the_state(tmp_path):
    config = tiny_config(tmp_path, train_steps=3, reset_every=1)
    t = frozen_trainer(config)
    t.run()
    a, seq = t.arrays, config.data.seq_len
    _, expected = t.model(a.inputs[:, 2 * seq:3 * seq])  # last chunk alone
    np.testing.assert_allclose(t.carried.read()[0].h, expected[0].h,
                               atol=ATOL)


@pytest.mark.slow
def test_carry_beats_reset_on_sine(tmp_path):
    results = {}
    for mode in ("carry", "reset"):
        config = tiny_config(
            tmp_path, name=mode, model=ModelConfig(units=64),
            data=DataConfig(seq_len=10, batch_size=16), train_steps=150,
            log_every=100, hist_every=1000, checkpoint_every=1000,
            learning_rate=5e-3, lr_schedule="cosine", state_mode=mode)
        results[mode] = trainer.train(config, out=io.StringIO())
    carry = results["carry"]["final_loss"]
    reset = results["reset"]["final_loss"]
    # Same data, model and seed: only the state policy differs.
    assert carry < 0.9 * reset, (carry, reset)
    assert carry < results["carry"]["baseline_loss"]


def _step_batch(batch, steps):
    x = tf.random.normal([batch, steps, 1])
    return {"inputs": x, "targets": x,
            "reset_mask": tf.zeros([batch, steps], tf.bool),
            "weights": tf.ones([batch, steps])}


def test_train_step_traces_once_for_new_lengths_and_when_asked_batch_sizes(
        tmp_path):
    """The trainer's step has the run's batch size in its signature (so the
    layers shard it when tracing) and traces once for any chunk length; a
    step built without a batch size traces once for any batch size too."""
    t = trainer.Trainer(tiny_config(tmp_path), out=io.StringIO())
    batch = t.config.data.batch_size
    for steps in (5, 8, 3):
        metrics, state, _ = t.train_step(_step_batch(batch, steps),
                                         t.model.initial_state(batch),
                                         tf.constant(False))
        assert state[0].h.shape == (batch, TINY_UNITS)
        assert np.isfinite(float(metrics["loss"]))
    assert t.trace_count == 1
    with pytest.raises(TypeError, match=f"shape=\\({batch + 2}, 5, 1\\)"):
        t.train_step(_step_batch(batch + 2, 5),
                     t.model.initial_state(batch + 2), tf.constant(False))
    traces = []
    any_batch = step_lib.make_train_step(
        t.model, t.optimizer, t.task, t.strategy, t.policy, 1.0,
        on_trace=lambda: traces.append(1))
    for batch, steps in ((2, 5), (4, 5), (3, 8)):
        metrics, state, _ = any_batch(_step_batch(batch, steps),
                                      t.model.initial_state(batch),
                                      tf.constant(False))
        assert state[0].h.shape == (batch, TINY_UNITS)
        assert np.isfinite(float(metrics["loss"]))
    assert len(traces) == 1


def read_events(logdir):
    acc = EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_hold_every_tag(tmp_path):
    config = tiny_config(tmp_path, model=ModelConfig(units=8, num_layers=2))
    trainer.train(config, out=io.StringIO())
    acc = read_events(str(tmp_path / "run" / "train"))
    tags = set(acc.Tags()["tensors"])
    for tag in ("loss", "rmse", "learning_rate", "grad_norm", "steps_per_sec",
                "examples_per_sec", "state/h_0", "state/c_1",
                "weights/cell_0/kernel", "gradients/cell_1/recurrent_kernel",
                "weights/head/kernel", "config"):
        assert tag in tags, (tag, sorted(tags))
    losses = acc.Tensors("loss")
    assert [e.step for e in losses] == [2, 4, 6]
    lr = tf.make_ndarray(acc.Tensors("learning_rate")[0].tensor_proto)
    assert lr == pytest.approx(config.learning_rate)
    assert [e.step for e in acc.Tensors("state/h_0")] == [3, 6]
    # HParams session data for the HParams dashboard.
    assert "_hparams_/session_start_info" in tags


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """One tiny run of 4 steps with the plain (not XLA-compiled) step, and
    its trainer, that the checkpoint, resume and jit tests read (a run's
    trainer traces its own step: one run instead of three). Tests that
    would change it work on a copy of its dir."""
    config = tiny_config(tmp_path_factory.mktemp("plain"), train_steps=4,
                         jit_compile=False)
    t = trainer.Trainer(config, out=io.StringIO())
    return config, t, t.run()


def test_checkpoint_holds_model_optimizer_step_state_and_data(plain_run):
    config, t, _ = plain_run
    latest = checkpoints.latest_checkpoint(config.model_dir)
    assert latest.endswith("ckpt-4")
    keys = {k for k, _ in tf.train.list_variables(latest)}
    assert any(k.startswith("step/") for k in keys)
    assert any(k.startswith("state/h/0") for k in keys)
    # Adam's two slots per trainable variable, and its iteration count.
    slots = [k for k in keys if k.startswith("optimizer/_variables/")]
    assert len(slots) >= 2 * len(t.model.trainable_variables)
    assert "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert any(k.startswith("data/") for k in keys)

    # A new trainer on the same dir restores all of it.
    resumed = trainer.Trainer(config, out=io.StringIO())
    resumed.restore()
    assert int(resumed.step) == 4
    for a, b in zip(t.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(t.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.carried.read()[0].c,
                                  t.carried.read()[0].c)
    np.testing.assert_array_equal(next(resumed.iterator)["inputs"],
                                  next(t.iterator)["inputs"])


def test_resume_refuses_other_settings(tmp_path, plain_run):
    shutil.copytree(plain_run[0].model_dir, tmp_path / "run")
    config = tiny_config(tmp_path, train_steps=4, jit_compile=False)
    other = dataclasses.replace(config, model=ModelConfig(units=32))
    with pytest.raises(ValueError, match=r"holds checkpoints of a run with "
                                         r"other settings: model\.units: "
                                         r"\d+ -> 32 \(recorded -> now\)"):
        trainer.Trainer(other, out=io.StringIO())
    # Other data, state_mode, seed or optimizer (loss scaling), each named.
    for change, named in (
            (dict(data=DataConfig(seq_len=4, batch_size=2)),
             "data.seq_len: 5 -> 4"),
            (dict(state_mode="reset"), "state_mode: 'carry' -> 'reset'"),
            (dict(data=DataConfig(seq_len=5, batch_size=2, seed=1)),
             "data.seed: 0 -> 1"),
            (dict(precision="mixed_float16"),
             "precision: 'float32' -> 'mixed_float16'")):
        with pytest.raises(ValueError, match=re.escape(
                f"other settings: {named} (recorded -> now)")):
            trainer.Trainer(dataclasses.replace(config, **change),
                            out=io.StringIO())
    # More steps is fine: it resumes.
    longer = dataclasses.replace(config, train_steps=6)
    out = io.StringIO()
    result = trainer.train(longer, out=out)
    assert result["steps_run"] == 2 and "Resuming from" in out.getvalue()


def test_jit_compiled_step_matches_the_plain_step(tmp_path, plain_run):
    jit = trainer.train(tiny_config(tmp_path, name="jit", train_steps=4,
                                    jit_compile=True), out=io.StringIO())
    plain = plain_run[2]
    assert len(plain["losses"]) == 4
    np.testing.assert_allclose(jit["losses"], plain["losses"], rtol=1e-4)


def test_grappler_changes_no_number(tmp_path, plain_run):
    """The tests in process run without grappler (helpers.set_grappler); a
    user's run, with it, trains the same numbers bit for bit."""
    config, plain_trainer, plain = plain_run
    options = tf.config.optimizer.get_experimental_options
    assert options()["disable_meta_optimizer"]
    set_grappler(True)
    try:
        assert not options().get("disable_meta_optimizer")
        t = trainer.Trainer(dataclasses.replace(
            config, model_dir=str(tmp_path / "grappler")), out=io.StringIO())
        result = t.run()
    finally:
        set_grappler(False)
    assert result["losses"] == plain["losses"]
    for got, want in zip(t.model.weights, plain_trainer.model.weights):
        np.testing.assert_array_equal(got, want, err_msg=got.name)
