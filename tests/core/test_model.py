"""LSTMModel numbers: against keras.layers.LSTM, NumPy, and itself."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from lstm_ctl import LSTMModel, LSTMState

ATOL = 1e-5
IMPLEMENTATIONS = ["fused", "loop", "cell"]


def random_inputs(batch, steps, features, seed=0):
    return np.random.default_rng(seed).normal(
        size=(batch, steps, features)).astype("float32")


def random_state(model, batch, seed=1):
    rng = np.random.default_rng(seed)
    return tuple(
        LSTMState(rng.normal(size=(batch, model.units)).astype("float32"),
                  rng.normal(size=(batch, model.units)).astype("float32"))
        for _ in range(model.num_layers))


def make_model(implementation="fused", **kwargs):
    kwargs.setdefault("units", 8)
    kwargs.setdefault("input_dim", 5)
    model = LSTMModel(implementation=implementation, **kwargs)
    # Non-trivial biases, so that a bias mix-up would show.
    for cell in model.cells:
        cell.bias.assign(np.random.default_rng(7).normal(
            size=cell.bias.shape).astype("float32"))
    return model


def as_np(state):
    return [(np.asarray(s.h), np.asarray(s.c)) for s in state]


def assert_states_close(a, b, atol=ATOL):
    for (ha, ca), (hb, cb) in zip(as_np(a), as_np(b)):
        np.testing.assert_allclose(ha, hb, atol=atol)
        np.testing.assert_allclose(ca, cb, atol=atol)


# --------------------------------------------------------------- references
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_matches_keras_lstm_with_nonzero_initial_state(implementation,
                                                       num_layers):
    model = make_model(implementation, num_layers=num_layers)
    x = random_inputs(3, 7, 5)
    state = random_state(model, 3)
    outputs, final = model(x, initial_state=state)

    seq = x
    for i in range(num_layers):
        layer = keras.layers.LSTM(8, return_sequences=True, return_state=True)
        layer.build((None, None, seq.shape[-1]))
        cell = model.cells[i]
        layer.cell.kernel.assign(cell.kernel)
        layer.cell.recurrent_kernel.assign(cell.recurrent_kernel)
        layer.cell.bias.assign(cell.bias)
        seq, h, c = layer(seq, initial_state=[state[i].h, state[i].c])
        np.testing.assert_allclose(final[i].h, h, atol=ATOL)
        np.testing.assert_allclose(final[i].c, c, atol=ATOL)
    np.testing.assert_allclose(outputs, seq, atol=ATOL)
    assert outputs.shape == (3, 7, 8)


def numpy_lstm_step(x, h, c, kernel, recurrent_kernel, bias):
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
    z = x @ kernel + h @ recurrent_kernel + bias
    i, f, g, o = np.split(z, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def test_matches_numpy_reference_with_head():
    model = make_model(num_layers=2, output_dim=3)
    x = random_inputs(2, 4, 5)
    state = random_state(model, 2)
    outputs, final = model(x, initial_state=state)
    hs = [np.asarray(s.h) for s in state]
    cs = [np.asarray(s.c) for s in state]
    weights = [(np.asarray(c.kernel), np.asarray(c.recurrent_kernel),
                np.asarray(c.bias)) for c in model.cells]
    head_w, head_b = (np.asarray(w) for w in model.head.weights)
    for t in range(4):
        inp = x[:, t]
        for i in range(2):
            hs[i], cs[i] = numpy_lstm_step(inp, hs[i], cs[i], *weights[i])
            inp = hs[i]
        np.testing.assert_allclose(outputs[:, t], inp @ head_w + head_b,
                                   atol=ATOL)
    for i in range(2):
        np.testing.assert_allclose(final[i].h, hs[i], atol=ATOL)
        np.testing.assert_allclose(final[i].c, cs[i], atol=ATOL)


# ------------------------------------------------------- the model with itself
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_one_call_equals_chunks_with_state_passed_and_stateful(implementation):
    model = make_model(implementation, num_layers=2, output_dim=3)
    x = random_inputs(4, 3 * 5, 5)
    state = random_state(model, 4)
    full, full_final = model(x, initial_state=state)

    chunk_state, chunks = state, []
    for k in range(3):
        out, chunk_state = model(x[:, 5 * k:5 * (k + 1)],
                                 initial_state=chunk_state)
        chunks.append(out)
    np.testing.assert_allclose(np.concatenate(chunks, 1), full, atol=ATOL)
    assert_states_close(chunk_state, full_final)

    stateful = make_model(implementation, num_layers=2, output_dim=3,
                          stateful=True)
    stateful.set_weights(model.get_weights())
    stateful.reset_state(state)
    outs = [stateful(x[:, 5 * k:5 * (k + 1)])[0] for k in range(3)]
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=ATOL)
    assert_states_close(stateful.state, full_final)


def test_step_equals_unrolled_call():
    model = make_model(num_layers=2, output_dim=3)
    x = random_inputs(3, 6, 5)
    state = random_state(model, 3)
    outputs, final = model(x, initial_state=state)
    step_state = state
    for t in range(6):
        y_t, step_state = model.step(x[:, t], step_state)
        np.testing.assert_allclose(y_t, outputs[:, t], atol=ATOL)
    assert_states_close(step_state, final)


def test_step_of_stateful_model_uses_and_updates_the_kept_state():
    model = make_model(num_layers=1, output_dim=2, stateful=True)
    x = random_inputs(2, 3, 5)
    outputs, final = model(x, initial_state=model.initial_state(2))
    model.reset_state()
    for t in range(3):
        y_t, _ = model.step(x[:, t])
        np.testing.assert_allclose(y_t, outputs[:, t], atol=ATOL)
    assert_states_close(model.state, final)


def test_example_alone_equals_example_in_a_batch_of_ten():
    model = make_model(num_layers=2, output_dim=3)
    x = random_inputs(10, 6, 5)
    state = random_state(model, 10)
    outputs, final = model(x, initial_state=state)
    for i in (0, 4, 9):
        alone = tuple(LSTMState(s.h[i:i + 1], s.c[i:i + 1]) for s in state)
        out_i, final_i = model(x[i:i + 1], initial_state=alone)
        np.testing.assert_allclose(out_i[0], outputs[i], atol=ATOL)
        assert_states_close(final_i,
                            tuple(LSTMState(s.h[i:i + 1], s.c[i:i + 1])
                                  for s in final))


# ------------------------------------------------------- reset_mask and mask
def _row(state, i):
    return tuple(LSTMState(s.h[i:i + 1], s.c[i:i + 1]) for s in state)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("initial_state_mode", ["zeros", "learned"])
def test_reset_mask_equals_separate_calls(implementation, initial_state_mode):
    model = make_model(implementation, num_layers=2, output_dim=3,
                       initial_state_mode=initial_state_mode)
    if initial_state_mode == "learned":
        for w in model.trainable_weights:
            if "initial_" in w.path:
                w.assign(np.full(w.shape, 0.3, "float32"))
    x = random_inputs(3, 8, 5)
    state = random_state(model, 3)
    reset = np.zeros((3, 8), bool)
    reset[0, 3] = True          # example 0: a new episode at t=3
    reset[2, 0] = True          # example 2: reset before the first step
    reset[2, 6] = True          #            and again at t=6
    outputs, final = model(x, initial_state=state, reset_mask=reset)

    # Example 0: steps 0..2 from its state, then 3..7 from the initial state.
    a, _ = model(x[0:1, :3], initial_state=_row(state, 0))
    b, fb = model(x[0:1, 3:], initial_state=model.initial_state(1))
    np.testing.assert_allclose(outputs[0], np.concatenate([a[0], b[0]]),
                               atol=ATOL)
    assert_states_close(_row(final, 0), fb)
    # Example 1: no reset.
    c, fc = model(x[1:2], initial_state=_row(state, 1))
    np.testing.assert_allclose(outputs[1], c[0], atol=ATOL)
    assert_states_close(_row(final, 1), fc)
    # Example 2: steps 0..5 and 6..7, each from the initial state.
    d, _ = model(x[2:3, :6], initial_state=model.initial_state(1))
    e, fe = model(x[2:3, 6:], initial_state=model.initial_state(1))
    np.testing.assert_allclose(outputs[2], np.concatenate([d[0], e[0]]),
                               atol=ATOL)
    assert_states_close(_row(final, 2), fe)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_mask_equals_calls_on_the_valid_steps_only(implementation):
    model = make_model(implementation, num_layers=2, output_dim=3)
    x = random_inputs(3, 7, 5)
    state = random_state(model, 3)
    mask = np.ones((3, 7), bool)
    mask[0, 4:] = False          # right padding
    mask[1, [1, 2, 5]] = False   # gaps inside the sequence
    outputs, final = model(x, initial_state=state, mask=mask)
    for i in range(3):
        valid = np.flatnonzero(mask[i])
        out_i, final_i = model(x[i:i + 1, valid], initial_state=_row(state, i))
        np.testing.assert_allclose(np.asarray(outputs[i])[valid], out_i[0],
                                   atol=ATOL)
        np.testing.assert_array_equal(np.asarray(outputs[i])[~mask[i]], 0.0)
        assert_states_close(_row(final, i), final_i)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_reset_then_masked_step_carries_the_reset_state(implementation):
    model = make_model(implementation, num_layers=1)
    x = random_inputs(1, 5, 5)
    state = random_state(model, 1)
    reset = np.zeros((1, 5), bool)
    mask = np.ones((1, 5), bool)
    reset[0, 2] = True
    mask[0, 2] = False           # reset and padding on the same step
    outputs, final = model(x, initial_state=state, reset_mask=reset,
                           mask=mask)
    # Steps 3, 4 start from the initial state; step 2 outputs zero.
    tail, tail_final = model(x[:, 3:], initial_state=model.initial_state(1))
    np.testing.assert_allclose(outputs[0, 3:], tail[0], atol=ATOL)
    np.testing.assert_array_equal(outputs[0, 2], 0.0)
    assert_states_close(final, tail_final)


# ------------------------------------------------------------ paths agree
def test_fused_and_cell_paths_agree_with_dropout_masks_and_resets():
    kwargs = dict(num_layers=2, output_dim=3, dropout=0.3,
                  recurrent_dropout=0.2, seed=11,
                  initial_state_mode="learned")
    fused = make_model("fused", **kwargs)
    cell = make_model("cell", **kwargs)
    cell.set_weights(fused.get_weights())
    x = random_inputs(4, 6, 5)
    state = random_state(fused, 4)
    rng = np.random.default_rng(3)
    reset = rng.random((4, 6)) < 0.2
    mask = rng.random((4, 6)) < 0.8
    results = []
    for model in (fused, cell):
        with tf.GradientTape() as tape:
            out, final = model(x, initial_state=state, reset_mask=reset,
                               mask=mask, training=True)
            loss = tf.reduce_sum(out ** 2) + tf.reduce_sum(final[1].c)
        grads = tape.gradient(loss, model.trainable_weights)
        results.append((out, final, grads))
    (out_f, fin_f, g_f), (out_c, fin_c, g_c) = results
    np.testing.assert_allclose(out_f, out_c, atol=ATOL)
    assert_states_close(fin_f, fin_c)
    for a, b in zip(g_f, g_c):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # And dropout really acted: inference gives other numbers.
    out_inf, _ = fused(x, initial_state=state, reset_mask=reset, mask=mask)
    assert np.abs(np.asarray(out_inf) - np.asarray(out_f)).max() > 1e-3


def test_dropout_uses_one_mask_per_sequence():
    # With a single mask per sequence, a zeroed input feature is zeroed at
    # every step: the outputs then equal inference on inputs with those
    # features removed (scaled by 1 / (1 - rate)).
    model = make_model(units=4, input_dim=6, dropout=0.5, seed=3)
    x = random_inputs(2, 5, 6)
    # The same seed draws the same mask in a twin model.
    model_copy = make_model(units=4, input_dim=6, dropout=0.5, seed=3)
    model_copy.set_weights(model.get_weights())
    out_train, _ = model(x, training=True)
    dp, _ = model_copy._dropout_masks(tf.constant(x), True)
    out_ref, _ = model_copy(x * np.asarray(dp[0])[:, None, :])
    np.testing.assert_allclose(out_train, out_ref, atol=ATOL)
    assert set(np.unique(np.asarray(dp[0]))) == {0.0, 2.0}


def test_gradients_reach_the_learned_initial_state():
    model = make_model(num_layers=2, output_dim=2,
                       initial_state_mode="learned")
    x = random_inputs(3, 4, 5)
    with tf.GradientTape() as tape:
        out, _ = model(x)
        loss = tf.reduce_mean(out ** 2)
    initial = [w for w in model.trainable_weights if "initial_" in w.path]
    assert len(initial) == 4
    grads = tape.gradient(loss, initial)
    for w, g in zip(initial, grads):
        assert g is not None and np.abs(np.asarray(g)).max() > 0, w.path
    # The learned initial state broadcasts to any batch size.
    for w in initial:
        w.assign(np.full(w.shape, 0.5, "float32"))
    s = model.initial_state(7)
    assert s[1].h.shape == (7, 8)
    np.testing.assert_array_equal(s[1].c, 0.5)


def test_compiled_call_serves_every_shape_without_a_trace_per_shape():
    # An input_signature cannot retrace, so counting the traces of `run`
    # proves nothing; what can fail: its one graph gives the eager numbers at
    # every shape, and the eager calls reach the compiled layer without a
    # trace per shape (reduce_retracing: at most one per dimension that
    # changes, batch then time; see also test_promises_model.py).
    from lstm_ctl.core import fused
    model = make_model(num_layers=2, output_dim=3, units=9, input_dim=7)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 7], tf.float32)])
    def run(x):
        return model(x)

    shapes = ((2, 3), (5, 3), (5, 9), (1, 1), (3, 13))
    before = fused._forward_only.experimental_get_tracing_count()
    eager = [model(random_inputs(b, t, 7)) for b, t in shapes]
    # Eagerly (before `run` leaves a trace of unknown shapes behind): at
    # most three traces for five shapes.
    assert fused._forward_only.experimental_get_tracing_count() - before <= 3
    for (batch, steps), (eager_out, eager_final) in zip(shapes, eager):
        out, final = run(random_inputs(batch, steps, 7))
        np.testing.assert_allclose(out, eager_out, atol=ATOL)
        assert_states_close(final, eager_final)


def test_compiled_call_with_state_masks_and_stateful_at_new_shapes():
    model = make_model(num_layers=1, output_dim=3, stateful=True)
    state_spec = (LSTMState(tf.TensorSpec([None, 8]), tf.TensorSpec([None, 8])),)

    # (An input_signature cannot retrace: the check is that its one graph
    # gives the eager numbers at a new batch size and length.)
    @tf.function(input_signature=[tf.TensorSpec([None, None, 5]), state_spec,
                                  tf.TensorSpec([None, None], tf.bool)])
    def run(x, state, reset):
        return model(x, initial_state=state, reset_mask=reset)

    for batch, steps in ((2, 4), (3, 6)):
        x = random_inputs(batch, steps, 5)
        state = random_state(model, batch)
        reset = np.zeros((batch, steps), bool)
        reset[:, 2] = True
        out, _ = run(x, state, reset)
        np.testing.assert_allclose(
            out, model(x, initial_state=state, reset_mask=reset)[0],
            atol=ATOL)
