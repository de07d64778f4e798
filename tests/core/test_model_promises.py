"""Model promises checked against references that share no code with the
path under test: dropout and recurrent dropout against Keras's own
`LSTMCell` dropout code, the SavedModel `serve`/`step` signatures with
non-trivial states in, and the retracing of the inner compiled functions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel, LSTMState
from lstm_ctl.serve import export
from lstm_ctl.core import fused

ATOL = 1e-5


def random_state(num_layers, batch, units, seed=1):
    rng = np.random.default_rng(seed)
    return tuple(LSTMState(rng.normal(size=(batch, units)).astype("float32"),
                           rng.normal(size=(batch, units)).astype("float32"))
                 for _ in range(num_layers))


def spy_on_masks(model, monkeypatch):
    """Records the dropout masks the model draws (they are not changed)."""
    seen = {}
    draw = model._dropout_masks

    def spy(x, training):
        seen["masks"] = draw(x, training)
        return seen["masks"]

    monkeypatch.setattr(model, "_dropout_masks", spy)
    return seen


def keras_reference(model, x, state, dp, rdp):
    """The stack stepped by fresh `keras.layers.LSTMCell(implementation=1)`s
    with the model's weights, Keras applying the dropout itself: its masks
    (one per gate) are fixed to the given `[B, D]` / `[B, H]` masks."""
    seq = x
    final = []
    for i, cell in enumerate(model.cells):
        ref = keras.layers.LSTMCell(
            model.units, implementation=1,
            dropout=model.dropout if dp is not None else 0.0,
            recurrent_dropout=(model.recurrent_dropout if rdp is not None
                               else 0.0))
        ref.build((None, seq.shape[-1]))
        ref.kernel.assign(cell.kernel)
        ref.recurrent_kernel.assign(cell.recurrent_kernel)
        ref.bias.assign(cell.bias)
        # Keras's DropoutRNNCell keeps its masks until they are reset; with
        # these set, Keras's own code multiplies them in.
        ref._dropout_mask = None if dp is None else [dp[i]] * 4
        ref._recurrent_dropout_mask = None if rdp is None else [rdp[i]] * 4
        h, c = state[i]
        outs = []
        for t in range(seq.shape[1]):
            h, (_, c) = ref(seq[:, t], [h, c], training=True)
            outs.append(np.asarray(h))
        seq = np.stack(outs, 1)
        final.append((h, c))
    return seq, final


@pytest.mark.parametrize("dropout, recurrent_dropout",
                         [(0.4, 0.0), (0.0, 0.4), (0.3, 0.5)])
def test_dropout_matches_keras_lstm_cell_dropout(dropout, recurrent_dropout,
                                                 monkeypatch):
    model = LSTMModel(units=16, num_layers=2, input_dim=12, dropout=dropout,
                      recurrent_dropout=recurrent_dropout, seed=5)
    seen = spy_on_masks(model, monkeypatch)
    x = np.random.default_rng(0).normal(size=(32, 6, 12)).astype("float32")
    state = random_state(2, 32, 16)
    out, final = model(x, initial_state=state, training=True)
    dp, rdp = seen["masks"]

    # The masks: drawn exactly for the rates that are set, Bernoulli with
    # the rate, scaled by 1 / (1 - rate), a different mask for every layer.
    for rate, masks in ((dropout, dp), (recurrent_dropout, rdp)):
        if rate == 0:
            assert masks is None
            continue
        assert len(masks) == 2
        for m in masks:
            m = np.asarray(m)
            np.testing.assert_allclose(np.unique(m), [0.0, 1 / (1 - rate)],
                                       rtol=1e-6)
            assert abs((m == 0).mean() - rate) < 0.1, (m == 0).mean()
        assert not np.array_equal(masks[0][:, :12], masks[1][:, :12])

    want_out, want_final = keras_reference(
        model, x, state, None if dp is None else [np.asarray(m) for m in dp],
        None if rdp is None else [np.asarray(m) for m in rdp])
    np.testing.assert_allclose(out, want_out, atol=ATOL)
    for (h, c), s in zip(want_final, final):
        np.testing.assert_allclose(s.h, h, atol=ATOL)
        np.testing.assert_allclose(s.c, c, atol=ATOL)
    # Dropout acted: inference (no masks) gives other numbers.
    plain, _ = model(x, initial_state=state)
    assert np.abs(np.asarray(plain) - np.asarray(out)).max() > 1e-2


# --------------------------------------------------------------- SavedModel
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = LSTMModel(units=6, output_dim=3, num_layers=2, input_dim=4,
                      initial_state_mode="learned")
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape).astype("float32"))
    export_dir = str(tmp_path_factory.mktemp("export") / "model")
    export.export_saved_model(model, export_dir)
    return model, tf.saved_model.load(export_dir)


def test_serve_uses_its_state_inputs_and_returns_every_final_state(exported):
    model, loaded = exported
    x = np.random.default_rng(2).normal(size=(3, 5, 4)).astype("float32")
    state = random_state(2, 3, 6, seed=4)
    feed = {f"{part}_{i}": getattr(s, part) for i, s in enumerate(state)
            for part in ("h", "c")}
    served = loaded.signatures["serve"](inputs=tf.constant(x),
                                        **{k: tf.constant(v)
                                           for k, v in feed.items()})
    outputs, final = model(x, initial_state=state)
    np.testing.assert_allclose(served["outputs"], outputs, atol=ATOL)
    for i, s in enumerate(final):
        np.testing.assert_allclose(served[f"h_{i}"], s.h, atol=ATOL)
        np.testing.assert_allclose(served[f"c_{i}"], s.c, atol=ATOL)
    # The state inputs matter: from the initial state the numbers differ.
    from_initial, _ = model(x)
    assert np.abs(np.asarray(from_initial) - outputs).max() > 1e-3

    stepped = loaded.signatures["step"](x_t=tf.constant(x[:, 0]),
                                        **{k: tf.constant(v)
                                           for k, v in feed.items()})
    y_t, next_state = model.step(x[:, 0], state)
    np.testing.assert_allclose(stepped["y_t"], y_t, atol=ATOL)
    for i, s in enumerate(next_state):
        np.testing.assert_allclose(stepped[f"h_{i}"], s.h, atol=ATOL)
        np.testing.assert_allclose(stepped[f"c_{i}"], s.c, atol=ATOL)

    init = loaded.signatures["initial_state"](batch_size=tf.constant(2))
    for i, s in enumerate(model.initial_state(2)):
        np.testing.assert_allclose(init[f"h_{i}"], s.h, atol=ATOL)
        np.testing.assert_allclose(init[f"c_{i}"], s.c, atol=ATOL)
        assert np.abs(np.asarray(s.c)).max() > 0.01   # learned, not zeros


# --------------------------------------------------------------- retracing
INNER = ("_forward_only", "_forward_saving", "_factors_compiled",
         "_loop_compiled", "_weights_compiled", "_inputs_compiled")


def inner_traces():
    return {name: getattr(fused, name).experimental_get_tracing_count()
            for name in INNER}


def test_eager_calls_trace_the_compiled_layer_at_most_three_times():
    """Eager calls reach the compiled layer functions with concrete shapes.
    With `reduce_retracing` TensorFlow retraces at most once per dimension
    that changes (batch, then time), then one trace serves every shape;
    without it, every new shape would trace (and compile) again."""
    model = LSTMModel(units=11, output_dim=2, input_dim=3)
    shapes = [(13, 7), (17, 7), (17, 23), (19, 29), (2, 31), (3, 37)]

    def run(batch, steps):
        x = tf.random.normal([batch, steps, 3])
        eager, _ = model(x)
        with tf.GradientTape() as tape:
            out, _ = model(x, training=True)
            loss = tf.reduce_sum(out ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in grads)
        return eager

    before = inner_traces()
    for batch, steps in shapes[:3]:
        run(batch, steps)
    middle = inner_traces()
    for name in INNER:
        assert middle[name] - before[name] <= 3, (name, before, middle)
    for batch, steps in shapes[3:]:
        run(batch, steps)
    assert inner_traces() == middle
