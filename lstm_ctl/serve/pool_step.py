"""The compiled batched step of a StatePool: gather the streams' rows of
the state storage, run `LSTMModel.step` once (or a time loop over the
longest stream's rows, shorter streams keeping their state), scatter the
new states back. Each function has an `input_signature` with `None` batch
and time, so it is traced once."""

import tensorflow as tf

from lstm_ctl.core import state as state_lib
from lstm_ctl.core.state import LSTMState


def step_functions(model, hs, cs, input_dim, on_trace=lambda: None):
    """`(one_row, rows)` over the state variables `hs`, `cs` (one
    `[capacity + 1, H]` per layer): `one_row(slots, x [B, D], fresh)` when
    every stream sends one row (one step, no loop) and `rows(slots,
    x [B, T, D], lengths, fresh)` for several. `on_trace` is called at each
    trace (Python: it counts traces, not calls)."""
    n = len(hs)

    def gather(slots, fresh, batch):
        state = tuple(LSTMState(tf.gather(h, slots), tf.gather(c, slots))
                      for h, c in zip(hs, cs))
        return state_lib.select_state(fresh, model.initial_state(batch),
                                      state)

    def scatter(slots, state):
        # Padding rows all point at the scratch slot; every real stream has
        # a slot of its own, so no two real rows collide.
        for i, s in enumerate(state):
            hs[i].scatter_update(tf.IndexedSlices(s.h, slots))
            cs[i].scatter_update(tf.IndexedSlices(s.c, slots))

    def one_row(slots, x, fresh):
        on_trace()
        y, state = model.step(x, gather(slots, fresh, tf.shape(x)[0]))
        scatter(slots, state)
        return tf.cast(y, tf.float32)  # [B, O]

    def rows(slots, x, lengths, fresh):
        on_trace()
        state = gather(slots, fresh, tf.shape(x)[0])
        steps = tf.shape(x)[1]
        x_tm = tf.transpose(x, [1, 0, 2])  # [T, B, D]
        outputs = tf.TensorArray(tf.float32, size=steps)

        def body(t, outputs, *flat):
            prev = tuple(LSTMState(flat[2 * i], flat[2 * i + 1])
                         for i in range(n))
            y, nxt = model.step(x_tm[t], prev)
            live = t < lengths  # [B]: rows left for this stream
            nxt = state_lib.select_state(live, nxt, prev)
            flat = [v for s in nxt for v in s]
            return (t + 1, outputs.write(t, tf.cast(y, tf.float32)), *flat)

        flat = [v for s in state for v in s]
        _, outputs, *flat = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), outputs, *flat))
        scatter(slots, tuple(LSTMState(flat[2 * i], flat[2 * i + 1])
                             for i in range(n)))
        return tf.transpose(outputs.stack(), [1, 0, 2])  # [B, T, O]

    slots = tf.TensorSpec([None], tf.int32)
    fresh = tf.TensorSpec([None], tf.bool)
    return (
        tf.function(one_row, autograph=False, input_signature=[
            slots, tf.TensorSpec([None, input_dim], tf.float32), fresh]),
        tf.function(rows, autograph=False, input_signature=[
            slots, tf.TensorSpec([None, None, input_dim], tf.float32),
            tf.TensorSpec([None], tf.int32), fresh]))
