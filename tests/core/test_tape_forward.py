"""`out, _ = model(x)` inside a user's `tf.GradientTape`, without
`training=`, costs what `training=True` costs: the fused layer's forward
saves what the backward needs when a tape records, so it runs once (not a
lean forward and then the saving forward again inside the gradient). The
gradient equals the one with `training=True` and the `LSTMCell` reference's.
Without a tape (`model(x)`, `predict`), the lean forward runs.

The compiled forwards are counted where they run: a `tf.Variable` counter
incremented next to each call, so the count is the same eagerly, inside a
`tf.function` and inside a shard's branch picked at run time."""

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel
from lstm_ctl.core import fused
from lstm_ctl.core import shards

UNITS, FEATURES = 6, 4


@pytest.fixture
def forwards(monkeypatch):
    """Counts the runs of the saving and the lean compiled forward."""
    # Not trainable: a tape (and tf.custom_gradient) would watch it.
    counters = {k: tf.Variable(0, trainable=False) for k in ("saving", "lean")}
    for name, attr in (("saving", "_forward_saving"),
                       ("lean", "_forward_only")):
        compiled = getattr(fused, attr)

        def counted(*args, compiled=compiled, counter=counters[name]):
            counter.assign_add(1)
            return compiled(*args)
        monkeypatch.setattr(fused, attr, counted)

    def read():
        return {k: int(v.numpy()) for k, v in counters.items()}

    def reset():
        for v in counters.values():
            v.assign(0)
    read.reset = reset
    return read


def models(**kwargs):
    """A fused model and the `LSTMCell` reference with the same weights."""
    kwargs = dict(units=UNITS, output_dim=2, input_dim=FEATURES, seed=3,
                  **kwargs)
    fast = LSTMModel(implementation="fused", **kwargs)
    ref = LSTMModel(implementation="cell", **kwargs)
    rng = np.random.default_rng(0)
    for w_fast, w_ref in zip(fast.weights, ref.weights):
        if w_fast.dtype == "float32":
            value = rng.normal(scale=0.5, size=w_fast.shape)
            w_fast.assign(value.astype("float32"))
            w_ref.assign(value.astype("float32"))
    return fast, ref


def batch(size=3, steps=5, seed=1):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(size=(size, steps, FEATURES))
                       .astype("float32"))


def user_step(model, training):
    """The custom loop of the README: the user's own tape."""
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if training is None:  # as users call it
                out, final = model(x)
            else:
                out, final = model(x, training=training)
            loss = (tf.reduce_sum(out * tf.constant([1.0, -2.0]))
                    + tf.reduce_sum(final[0].c * 0.5))
        return out, tape.gradient(loss, [x, model.trainable_variables])
    return step


def wrapped(step, how):
    if how == "eager":
        return step
    if how == "function":
        return tf.function(step)
    # Batch size unknown when tracing: the shard count is picked at run
    # time, inside branch functions.
    return tf.function(step, input_signature=[
        tf.TensorSpec([None, None, FEATURES])])


def assert_close(a, b):
    flat_a, flat_b = tf.nest.flatten(a), tf.nest.flatten(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        assert x is not None and y is not None
        np.testing.assert_allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("how", ["eager", "function", "unknown_batch"])
def test_model_call_under_a_tape_saves_in_its_one_forward(
        forwards, monkeypatch, how):
    # Two cores, 4-row shards: a batch of 8 runs as 2 shards, of 3 as 1.
    monkeypatch.setattr(shards, "_cores", lambda: 2)
    fast, ref = models()
    x = batch(size=8)
    shard_count = 1 if how == "eager" else 2

    expected = wrapped(user_step(ref, None), how)(x)
    forwards.reset()
    with_training = wrapped(user_step(fast, True), how)(x)
    assert forwards() == {"saving": shard_count, "lean": 0}

    forwards.reset()
    natural = wrapped(user_step(fast, None), how)(x)
    # One forward per shard, the saving one; the backward did not run
    # another.
    assert forwards() == {"saving": shard_count, "lean": 0}
    assert_close(natural, with_training)
    assert_close(natural, expected)


def test_two_layers_with_resets_and_padding(forwards):
    fast, ref = models(num_layers=2, initial_state_mode="learned")
    x = batch(size=3, steps=6)
    rng = np.random.default_rng(2)
    reset = tf.constant(rng.random((3, 6)) < 0.3)
    mask = tf.constant(rng.random((3, 6)) < 0.8)

    def step(model):
        with tf.GradientTape() as tape:
            out, final = model(x, reset_mask=reset, mask=mask)
            loss = tf.reduce_sum(out) + tf.reduce_sum(final[1].h)
        return out, tape.gradient(loss, model.trainable_variables)

    expected = step(ref)
    forwards.reset()
    got = tf.function(lambda: step(fast))()
    assert forwards() == {"saving": 2, "lean": 0}  # one per layer
    assert_close(got, expected)


def test_a_tape_that_watches_only_the_inputs_also_saves(forwards):
    fast, ref = models()
    x = batch()

    def step(model):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            out, _ = model(x)
        return tape.gradient(out, x)

    expected = step(ref)
    forwards.reset()
    got = step(fast)
    assert forwards() == {"saving": 1, "lean": 0}
    assert_close(got, expected)


def test_without_a_tape_the_lean_forward_runs(forwards):
    fast, _ = models()
    x = batch()
    forwards.reset()
    fast(x)
    tf.function(lambda x: fast(x))(x)
    fast.predict(x, verbose=0)
    with tf.GradientTape() as tape:
        with tape.stop_recording():
            fast(x)
    counts = forwards()
    assert counts["saving"] == 0, counts
    assert counts["lean"] >= 4, counts


def test_a_tape_outside_a_function_traced_without_one_still_gets_the_gradient(
        forwards):
    # The function is traced (lean) before any tape exists; a tape around
    # a later call asks for the gradient, and the backward reruns the
    # saving forward.
    fast, ref = models()
    x = batch()
    forward = tf.function(lambda x: fast(x)[0])
    forward(x)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(forward(x))
    got = tape.gradient(loss, fast.trainable_variables)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ref(x)[0])
    assert_close(got, tape.gradient(loss, ref.trainable_variables))


def test_dropout_only_with_training_true_even_under_a_tape():
    fast, _ = models(dropout=0.5, recurrent_dropout=0.5)
    x = batch()
    lean = fast(x)[0]
    with tf.GradientTape():
        natural = fast(x)[0]
        dropped = fast(x, training=True)[0]
    np.testing.assert_allclose(natural, lean, atol=1e-6)
    assert np.abs(dropped.numpy() - lean.numpy()).max() > 1e-3


def test_batched_step_is_compiled_once_for_every_batch_size():
    """`model.step` under an `input_signature` with the batch size None (a
    pool of streams in buckets) traces once, its XLA layer step once, and
    gives the reference's numbers (`implementation="cell"` steps op by op)
    and the sequence call's."""
    fast, ref = models(num_layers=2)
    spec = [tf.TensorSpec([None, FEATURES]),
            tuple((tf.TensorSpec([None, UNITS]), tf.TensorSpec([None, UNITS]))
                  for _ in range(2))]
    traces = []

    def step(model):
        def run(x_t, state):
            traces.append(model.implementation)
            return model.step(x_t, state)
        return tf.function(run, input_signature=spec)

    fast_step, ref_step = step(fast), step(ref)
    layer_traces = []
    for size in (1, 7, 64):
        x = batch(size=size, steps=3, seed=size)
        state = tuple(tuple(s) for s in fast.initial_state(size))
        expected_state = state
        for t in range(3):
            y, state = fast_step(x[:, t], state)
            y_ref, expected_state = ref_step(x[:, t], expected_state)
            np.testing.assert_allclose(y, y_ref, atol=1e-5)
            assert_close(state, expected_state)
        np.testing.assert_allclose(y, fast(x)[0][:, -1], atol=1e-5)
        layer_traces.append(fused.cell_step.experimental_get_tracing_count())
    assert traces == ["fused", "cell"]
    # Traced for the first batch size (once per layer's input width), not
    # again for the others.
    assert layer_traces[0] == layer_traces[-1], layer_traces
