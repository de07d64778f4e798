"""The fast paths give the reference path's numbers: outputs, final state,
and every gradient (inputs, initial state, weights), in every combination of
resets, padding, dropout and learned initial state, eagerly, inside
tf.function and inside tf.function(jit_compile=True)."""


import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel, LSTMState
from lstm_ctl.core import fused
from lstm_ctl.core import shards

ATOL = 1e-5
GRAD_ATOL = 1e-4


def build_pair(implementation, **kwargs):
    kwargs = dict(units=6, output_dim=3, num_layers=2, input_dim=4, seed=5,
                  **kwargs)
    ref = LSTMModel(implementation="cell", **kwargs)
    fast = LSTMModel(implementation=implementation, **kwargs)
    rng = np.random.default_rng(0)
    weights = [rng.normal(scale=0.5, size=w.shape).astype("float32")
               for w in ref.weights if w.dtype == "float32"]
    for model in (ref, fast):
        float_weights = [w for w in model.weights if w.dtype == "float32"]
        for w, value in zip(float_weights, weights):
            w.assign(value)
    return ref, fast


def inputs(batch=3, steps=7, seed=1, reset=False, mask=False):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, steps, 4)).astype("float32"))
    state = tuple(LSTMState(
        tf.constant(rng.normal(size=(batch, 6)).astype("float32")),
        tf.constant(rng.normal(size=(batch, 6)).astype("float32")))
        for _ in range(2))
    reset_mask = rng.random((batch, steps)) < 0.25 if reset else None
    pad = rng.random((batch, steps)) < 0.8 if mask else None
    return x, state, reset_mask, pad


def run(model, x, state, reset, mask, training, wrap=None):
    def fn(x, state):
        with tf.GradientTape() as tape:
            tape.watch([x, state])
            out, final = model(x, initial_state=state, reset_mask=reset,
                               mask=mask, training=training)
            # Weigh outputs and final state so every gradient path counts.
            loss = (tf.reduce_sum(out * tf.range(1.0, 4.0))
                    + tf.reduce_sum(final[0].h * 0.3)
                    + tf.reduce_sum(final[1].c * -0.7))
        grads = tape.gradient(loss, [x, state, model.trainable_variables])
        return out, final, grads
    if wrap is not None:
        fn = wrap(fn)
    return fn(x, state)


def assert_same(a, b):
    out_a, final_a, grads_a = a
    out_b, final_b, grads_b = b
    np.testing.assert_allclose(out_a, out_b, atol=ATOL)
    for s_a, s_b in zip(final_a, final_b):
        np.testing.assert_allclose(s_a.h, s_b.h, atol=ATOL)
        np.testing.assert_allclose(s_a.c, s_b.c, atol=ATOL)
    flat_a, flat_b = tf.nest.flatten(grads_a), tf.nest.flatten(grads_b)
    assert len(flat_a) == len(flat_b)
    for g_a, g_b in zip(flat_a, flat_b):
        # The learned initial state has no gradient when no reset uses it.
        assert (g_a is None) == (g_b is None)
        if g_a is not None:
            np.testing.assert_allclose(g_a, g_b, atol=GRAD_ATOL)
    return sum(g is not None for g in flat_a)


# The fused path with every pair of options (reset, mask, dropout) seen
# together, on and off, and all three on (each pattern compiles its own
# loop); the plain autodiff loop ("loop") with all options on.
CASES = [("fused", *case) for case in (
    (False, False, False), (False, True, True), (True, False, True),
    (True, True, False), (True, True, True))]
CASES.append(("loop", True, True, True))


@pytest.mark.parametrize("implementation, reset, mask, dropout", CASES)
def test_every_combination_matches_the_reference(implementation, reset, mask,
                                                 dropout):
    kwargs = dict(initial_state_mode="learned")
    if dropout:
        kwargs.update(dropout=0.3, recurrent_dropout=0.3)
    ref, fast = build_pair(implementation, **kwargs)
    x, state, reset_mask, pad = inputs(reset=reset, mask=mask)
    for training in (True, False):
        count = assert_same(run(fast, x, state, reset_mask, pad, training),
                            run(ref, x, state, reset_mask, pad, training))
        # x, 4 state tensors, 3 x 2 kernels, head 2, learned init 4 if reset.
        assert count == 1 + 4 + 6 + 2 + (4 if reset else 0)


@pytest.mark.parametrize("jit", [False, True])
def test_compiled_and_xla_compiled_match_the_reference(jit):
    ref, fast = build_pair("fused", initial_state_mode="learned")
    x, state, reset_mask, pad = inputs(reset=True, mask=True)
    expected = run(ref, x, state, reset_mask, pad, True)
    for training in (True, False):
        got = run(fast, x, state, reset_mask, pad, training,
                  wrap=lambda f: tf.function(f, jit_compile=jit))
        assert_same(got, expected)


def test_gradient_of_the_inference_path_reruns_the_saving_loop():
    # training=False saves nothing; a gradient must still be exact.
    ref, fast = build_pair("fused")
    x, state, _, _ = inputs(batch=2, steps=5)
    assert_same(run(fast, x, state, None, None, training=False),
                run(ref, x, state, None, None, training=False))


def test_one_step_and_long_sequences():
    ref, fast = build_pair("fused")
    for steps in (1, 60):
        x, state, _, _ = inputs(batch=2, steps=steps, seed=steps)
        assert_same(run(fast, x, state, None, None, True),
                    run(ref, x, state, None, None, True))


def test_gate_activations_equal_sigmoid_and_tanh():
    z = tf.constant(np.linspace(-30, 30, 4 * 50, dtype="float32")[None])
    scale = fused._gate_scale(50, tf.float32)
    acts = tf.tanh(z * scale) * scale + (1.0 - scale)
    i, f, g, o = tf.split(acts, 4, axis=1)
    zi, zf, zg, zo = tf.split(z, 4, axis=1)
    np.testing.assert_allclose(i, tf.sigmoid(zi), atol=1e-6)
    np.testing.assert_allclose(f, tf.sigmoid(zf), atol=1e-6)
    np.testing.assert_allclose(g, tf.tanh(zg), atol=1e-6)
    np.testing.assert_allclose(o, tf.sigmoid(zo), atol=1e-6)


def test_compiled_model_call_does_not_retrace_for_new_shapes():
    model = LSTMModel(units=6, output_dim=2, input_dim=4)
    traces = []

    @tf.function(input_signature=[tf.TensorSpec([None, None, 4])])
    def train_like(x):
        traces.append(1)
        with tf.GradientTape() as tape:
            out, _ = model(x, training=True)
            loss = tf.reduce_mean(out ** 2)
        return tape.gradient(loss, model.trainable_variables)

    counts = []
    for batch, steps in ((2, 3), (5, 3), (5, 11), (1, 2)):
        train_like(tf.random.normal([batch, steps, 4]))
        counts.append((len(traces),
                       fused._forward_saving.experimental_get_tracing_count(),
                       fused._loop_compiled.experimental_get_tracing_count()))
    assert counts[0] == counts[-1], counts


@pytest.mark.parametrize("batch_known", [True, False])
def test_batch_shards_match_the_reference(monkeypatch, batch_known):
    """The batch cut into shards (here forced at 2 rows a shard on 4 cores)
    gives the reference's numbers, with every option on: uneven shards,
    resets to a learned state, padding and dropout. With the batch size
    unknown when tracing, the shard count is picked at run time."""
    monkeypatch.setattr(shards, "MIN_SHARD_ROWS", 2)
    monkeypatch.setattr(shards, "_cores", lambda: 4)
    shard_rows = []  # traced shard sizes
    calls = tf.Variable(0)  # shards that ran (counted at run time)
    layer = fused._layer
    monkeypatch.setattr(fused, "_layer", lambda inputs, **k: (
        shard_rows.append(inputs.x.shape[1]), calls.assign_add(1),
        layer(inputs, **k))[2])
    ref, fast = build_pair("fused", initial_state_mode="learned",
                           dropout=0.3, recurrent_dropout=0.3)
    # Unknown batch: 4 shards and 1 shard picked at run time from the same
    # traced branches; known: the count (4, uneven) fixed when tracing.
    cases = (((9, [3, 2, 2, 2]),) if batch_known
             else ((9, [None] * 4), (2, [None])))
    for batch, rows in cases:
        x, state, reset_mask, pad = inputs(batch=batch, reset=True, mask=True)
        expected = run(ref, x, state, reset_mask, pad, True)
        spec = [tf.TensorSpec([batch if batch_known else None, 7, 4]),
                tf.nest.map_structure(
                    lambda s: tf.TensorSpec([batch if batch_known else None,
                                             6]), state)]
        del shard_rows[:]
        calls.assign(0)
        got = run(fast, x, state, reset_mask, pad, True,
                  wrap=lambda f: tf.function(f, input_signature=spec))
        assert_same(got, expected)
        # Two layers; unknown batch: every branch is traced (1, 2, 4 shards)
        # and the one the batch size picks runs.
        assert shard_rows == (rows * 2 if batch_known
                              else [None] * 7 * 2), shard_rows
        assert int(calls.numpy()) == len(rows) * 2


def test_no_shards_where_they_could_not_run_side_by_side(monkeypatch):
    monkeypatch.setattr(shards, "_cores", lambda: 5)
    counts = {}

    def probe(name):
        return lambda: counts.setdefault(name, shards.shard_counts())

    probe("eager")()
    tf.function(probe("graph"))()
    tf.function(probe("xla"), jit_compile=True)()
    monkeypatch.setattr(tf.config.threading,
                        "get_inter_op_parallelism_threads", lambda: 3)
    tf.function(probe("inter_op=3"))()
    assert counts == {"eager": [1], "graph": [1, 2, 4], "xla": [1],
                      "inter_op=3": [1, 2]}
