"""Stateful mode: kept state, reset_state, any batch size, checkpoints."""

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel, LSTMState
from test_model import ATOL, assert_states_close, random_inputs, random_state


def make_stateful(**kwargs):
    kwargs.setdefault("units", 8)
    kwargs.setdefault("output_dim", 2)
    return LSTMModel(input_dim=5, stateful=True, **kwargs)


def test_the_stateful_experiment():
    model = make_stateful(num_layers=2)
    x = random_inputs(4, 6, 5)
    first, _ = model(x)
    second, _ = model(x)
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-3

    model.reset_state()
    again, _ = model(x)
    np.testing.assert_allclose(again, first, atol=ATOL)

    ones = tuple(LSTMState(np.ones((4, 8), "float32"),
                           np.ones((4, 8), "float32")) for _ in range(2))
    model.reset_state(ones)
    from_ones, _ = model(x)
    assert np.abs(np.asarray(from_ones) - np.asarray(first)).max() > 1e-3
    expected, _ = model(x, initial_state=ones)  # also keeps its final state
    np.testing.assert_allclose(from_ones, expected, atol=ATOL)

    # A batch of 1 after reset_state(state of batch 1).
    one_state = tuple(LSTMState(s.h[:1], s.c[:1]) for s in ones)
    model.reset_state(one_state)
    single, final = model(x[:1])
    np.testing.assert_allclose(single[0], from_ones[0], atol=ATOL)
    assert model.state[0].h.shape == (1, 8)
    assert_states_close(model.state, final)


def test_state_is_none_before_the_first_call_then_any_batch_size_starts():
    model = make_stateful()
    assert model.state is None
    out, final = model(random_inputs(3, 4, 5))
    assert_states_close(model.state, final)
    stateless = LSTMModel(units=8, output_dim=2, input_dim=5)
    stateless.set_weights(model.get_weights())
    np.testing.assert_allclose(out, stateless(random_inputs(3, 4, 5))[0],
                               atol=ATOL)


def test_call_with_initial_state_starts_from_it_and_keeps_the_final_state():
    model = make_stateful()
    x = random_inputs(2, 4, 5)
    model(x)
    state = random_state(model, 2)
    out, final = model(x, initial_state=state)
    stateless = LSTMModel(units=8, output_dim=2, input_dim=5)
    stateless.set_weights(model.get_weights())
    np.testing.assert_allclose(out, stateless(x, initial_state=state)[0],
                               atol=ATOL)
    assert_states_close(model.state, final)


def test_reset_state_with_mask_resets_only_those_examples():
    model = make_stateful(num_layers=2)
    x = random_inputs(3, 4, 5)
    model(x)
    before = [(np.asarray(s.h), np.asarray(s.c)) for s in model.state]
    model.reset_state(mask=[True, False, True])
    after = model.state
    for (h0, c0), s in zip(before, after):
        np.testing.assert_array_equal(np.asarray(s.h)[[0, 2]], 0.0)
        np.testing.assert_array_equal(np.asarray(s.c)[[0, 2]], 0.0)
        np.testing.assert_array_equal(np.asarray(s.h)[1], h0[1])
        np.testing.assert_array_equal(np.asarray(s.c)[1], c0[1])
    # Given values for masked examples only.
    values = random_state(model, 3)
    model.reset_state(values, mask=np.array([False, True, False]))
    for v, s, (h0, _) in zip(values, model.state, after):
        np.testing.assert_array_equal(np.asarray(s.h)[1], v.h[1])
        np.testing.assert_array_equal(np.asarray(s.h)[0], np.asarray(h0)[0])


def test_reset_state_to_the_learned_initial_state_and_new_batch_size():
    model = make_stateful(initial_state_mode="learned")
    for w in model.trainable_weights:
        if "initial_" in w.path:
            w.assign(np.full(w.shape, 0.25, "float32"))
    model(random_inputs(2, 3, 5))
    model.reset_state(mask=[True, True])
    np.testing.assert_array_equal(model.state[0].h, np.full((2, 8), 0.25))
    model.reset_state(batch_size=6)
    assert model.state[0].c.shape == (6, 8)
    np.testing.assert_array_equal(model.state[0].c, np.full((6, 8), 0.25))
    out, _ = model(random_inputs(6, 3, 5))
    assert out.shape == (6, 3, 2)


@pytest.mark.parametrize("initial_state_mode", ["zeros", "learned"])
def test_reset_state_clears_then_another_batch_size_equals_a_fresh_model(
        initial_state_mode):
    model = make_stateful(num_layers=2, initial_state_mode=initial_state_mode)
    for w in model.trainable_weights:
        if "initial_" in w.path:
            w.assign(np.full(w.shape, 0.3, "float32"))
    model(random_inputs(1, 3, 5))          # keeps a state of batch size 1
    model.reset_state()
    assert model.state is None
    x = random_inputs(2, 4, 5, seed=3)
    out, final = model(x)                  # batch size 2 starts over
    fresh = make_stateful(num_layers=2, initial_state_mode=initial_state_mode)
    fresh.set_weights(model.get_weights())
    expected, _ = fresh(x)
    np.testing.assert_allclose(out, expected, atol=ATOL)
    assert_states_close(model.state, final)
    # Compiled too: a cleared state starts over at the graph's batch size.
    run = tf.function(lambda x: model(x)[0], input_signature=[
        tf.TensorSpec([None, None, 5])])
    model.reset_state()
    np.testing.assert_allclose(run(x[:1]), fresh(x[:1], initial_state=
                                                  fresh.initial_state(1))[0],
                               atol=ATOL)


def test_compiled_stateful_call_accepts_any_batch_size_after_a_reset():
    model = make_stateful()

    # (An input_signature cannot retrace: the check is that its one graph
    # serves the kept state at a new batch size after a reset.)
    @tf.function(input_signature=[tf.TensorSpec([None, None, 5])])
    def run(x):
        return model(x)

    x4 = random_inputs(4, 3, 5)
    first, _ = run(x4)
    second, _ = run(x4)
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-3
    model.reset_state(batch_size=2)
    out2, _ = run(x4[:2])
    np.testing.assert_allclose(out2, first[:2], atol=ATOL)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="keeps a state of batch size 2 but the inputs "
                             "have batch size 4.*reset_state"):
        run(x4)


# --------------------------------------------------------------- checkpoints
def checkpoint_keys(path):
    return {name for name, _ in tf.train.list_variables(path)}


def test_checkpoint_holds_every_variable_and_the_kept_state(tmp_path):
    model = make_stateful(num_layers=2, initial_state_mode="learned",
                          dropout=0.1)
    x = random_inputs(3, 4, 5)
    model(x, training=True)
    kept = [(np.asarray(s.h), np.asarray(s.c)) for s in model.state]
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    keys = checkpoint_keys(path)
    # Every model variable (weights, learned initial state, dropout RNG) ...
    values = {name: tf.train.load_variable(path, name) for name in keys
              if "VARIABLE_VALUE" in name}
    for w in model.weights:
        assert any(v.shape == tuple(w.shape) and np.array_equal(v, w)
                   for v in values.values()), w.path
    assert len(model.weights) == 2 * 3 + 2 + 4 + 1
    # ... and the kept state, 2 layers x (h, c).
    kept_keys = [k for k in keys if "kept_" in k]
    assert len(kept_keys) == 4

    restored = make_stateful(num_layers=2, initial_state_mode="learned",
                             dropout=0.1)
    tf.train.Checkpoint(model=restored).restore(path).assert_consumed()
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a, b)
    for (h, c), s in zip(kept, restored.state):
        np.testing.assert_array_equal(s.h, h)
        np.testing.assert_array_equal(s.c, c)
    np.testing.assert_allclose(restored(x)[0], model(x)[0], atol=ATOL)


def test_restore_brings_back_a_state_of_another_batch_size(tmp_path):
    model = make_stateful()
    model(random_inputs(5, 2, 5))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    other = make_stateful()
    other.set_weights(model.get_weights())
    other(random_inputs(2, 2, 5))   # keeps a batch of 2 ...
    tf.train.Checkpoint(model=other).restore(path).assert_consumed()
    assert other.state[0].h.shape == (5, 8)  # ... restored to the saved 5
    np.testing.assert_array_equal(other.state[0].h, model.state[0].h)
