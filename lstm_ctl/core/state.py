"""LSTMState, state validation, and the helpers that reset a state.

The state of an `LSTMModel` is always a tuple with one `LSTMState(h, c)` per
layer (also for a single layer), each `h` and `c` of shape `[B, H]`.
"""

from typing import Any, NamedTuple

import tensorflow as tf


class LSTMState(NamedTuple):
    """The state of one LSTM layer: hidden state `h` and cell state `c`, `[B, H]`."""

    h: Any
    c: Any


def zeros_state(batch_size, units, num_layers, dtype=tf.float32):
    """A tuple of `num_layers` all-zero `LSTMState`s of shape `[batch_size, units]`."""
    zeros = tf.zeros(tf.stack([batch_size, units]), dtype=dtype)
    return tuple(LSTMState(zeros, zeros) for _ in range(num_layers))


def broadcast_state(per_layer_vectors, batch_size):
    """Broadcasts `[(h0, c0), ...]` vectors of shape `[H]` to `[B, H]` states."""
    out = []
    for h0, c0 in per_layer_vectors:
        shape = tf.stack([batch_size, tf.shape(h0)[0]])
        out.append(LSTMState(tf.broadcast_to(h0[None, :], shape),
                             tf.broadcast_to(c0[None, :], shape)))
    return tuple(out)


def select_state(mask, if_true, if_false):
    """Per example: `if_true` where `mask [B]` is True, else `if_false`.

    Both states are tuples of `LSTMState`; this is how a state is reset for
    some examples only (`reset_mask`, `reset_state(mask=...)`).
    """
    m = tf.reshape(tf.cast(mask, tf.bool), [-1, 1])  # [B, 1]
    return tuple(
        LSTMState(tf.where(m, t.h, f.h), tf.where(m, t.c, f.c))
        for t, f in zip(if_true, if_false))


def reset_first_step(reset_mask, force):
    """`reset_mask [B, T]` with every example's step 0 set where `force`.

    A forced reset restarts the whole carried state at the start of a batch
    (`--reset_every` in training, the reset mode of evaluation).
    """
    first = tf.logical_and(force, tf.equal(tf.range(tf.shape(reset_mask)[1]),
                                           0))  # [T]
    return tf.logical_or(reset_mask, first[None, :])


class StateVariables(tf.Module):
    """A state kept across calls in `[None, H]` variables, one h and c per
    layer, so that its batch size can change; batch size 0 means that
    nothing is kept yet. Checkpointed with whatever holds it; not model
    weights. Used for a stateful model's kept state and the trainer's
    carried state."""

    def __init__(self, num_layers, units, dtype=tf.float32, name=None):
        super().__init__(name=name)
        with tf.init_scope():
            def make(part, i):
                return tf.Variable(tf.zeros([0, units], dtype),
                                   shape=tf.TensorShape([None, units]),
                                   trainable=False, name=f"{part}_{i}")
            self.h = [make("h", i) for i in range(num_layers)]
            self.c = [make("c", i) for i in range(num_layers)]

    def assign(self, state):
        for h, c, s in zip(self.h, self.c, state):
            h.assign(s.h)
            c.assign(s.c)

    def clear(self):
        """Keeps nothing (batch size 0)."""
        for v in self.h + self.c:
            v.assign(tf.zeros([0, v.shape[1]], v.dtype))

    def value(self):
        """The kept values (batch size 0 when nothing is kept)."""
        return tuple(LSTMState(h.read_value(), c.read_value())
                     for h, c in zip(self.h, self.c))

    def batch_size(self):
        return tf.shape(self.h[0])[0]

    def read(self):
        """The kept state, or None when nothing is kept (eagerly)."""
        if int(self.batch_size()) == 0:
            return None
        return self.value()


def stop_gradient(state):
    """The state with gradients stopped (truncated backprop through time)."""
    return tuple(LSTMState(tf.stop_gradient(s.h), tf.stop_gradient(s.c))
                 for s in state)


def _describe(value):
    if isinstance(value, LSTMState):
        return "a single LSTMState"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} elements"
    if hasattr(value, "shape"):
        return f"a tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def normalize_state(state, num_layers, units, batch_size=None, name="state",
                    dtype=tf.float32):
    """Checks a state's structure and shapes; returns a tuple of `LSTMState`.

    Accepts a tuple or list of `num_layers` items, each an `LSTMState` or an
    `(h, c)` pair, with `h` and `c` of shape `[B, units]`. `batch_size` is the
    expected B: a Python int is checked here, a tensor (a size known only at
    run time inside a `tf.function`) by a runtime assertion. Every problem is
    a ValueError that says what was expected.
    """
    expected = (f"a tuple of {num_layers} LSTMState(h, c), one per layer, "
                f"each h and c of shape [batch, {units}]")
    if isinstance(state, LSTMState) or not isinstance(state, (tuple, list)):
        hint = (" (wrap a single layer's state in a tuple: (state,))"
                if isinstance(state, LSTMState) and num_layers == 1 else "")
        raise ValueError(f"`{name}` must be {expected}; got {_describe(state)}"
                         f"{hint}.")
    if len(state) != num_layers:
        raise ValueError(f"`{name}` must be {expected}; got {_describe(state)} "
                         f"for a model of {num_layers} layer(s).")
    out = []
    for i, layer_state in enumerate(state):
        if not isinstance(layer_state, (tuple, list)) or len(layer_state) != 2:
            raise ValueError(f"`{name}[{i}]` must be an LSTMState(h, c); got "
                             f"{_describe(layer_state)}.")
        # Cast, not converted: a state of another float dtype (e.g. one
        # computed in bfloat16) becomes the state dtype.
        h, c = (tf.cast(tf.convert_to_tensor(t), dtype) for t in layer_state)
        for part, t in (("h", h), ("c", c)):
            if t.shape.rank != 2 or (t.shape[1] is not None
                                     and t.shape[1] != units):
                raise ValueError(
                    f"`{name}[{i}].{part}` must have shape [batch, {units}]; "
                    f"got shape {t.shape.as_list() if t.shape.rank is not None else 'of unknown rank'}.")
        out.append(LSTMState(h, c))
    check_batch_size(out, batch_size, name)
    return tuple(out)


def check_batch_size(state, batch_size, name="state"):
    """Checks that every h and c of `state` has `batch_size` rows."""
    if batch_size is None:
        return
    for i, layer_state in enumerate(state):
        for part, t in (("h", layer_state.h), ("c", layer_state.c)):
            static_b = t.shape[0]
            msg = (f"`{name}[{i}].{part}` has batch size {{}} but the inputs "
                   f"have batch size {{}}; a state must have one row per "
                   f"example.")
            if isinstance(batch_size, int) and static_b is not None:
                if static_b != batch_size:
                    raise ValueError(msg.format(static_b, batch_size))
            else:
                tf.debugging.assert_equal(
                    tf.shape(t)[0], batch_size,
                    message=f"`{name}[{i}].{part}` must have one row per "
                            f"example of the inputs (batch sizes differ)")
