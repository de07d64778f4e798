"""The loops over timesteps: one LSTM layer over a whole sequence.

Everything here is time-major: sequences are `[T, B, ...]`, masks `[T, B]`.
Sequences and kernels are in the compute dtype, the state and the gate math
in the state's dtype (float32 under a mixed policy).
`layer_sequence` is the fused path (input projection hoisted out of the
loop, one `h @ recurrent_kernel` per step, gate math written out);
`cell_sequence` steps `keras.layers.LSTMCell`s and is the reference the fused
path is tested against.
"""

import tensorflow as tf

from lstm_ctl.core.state import LSTMState


def gates(z, c):
    """LSTM gate math on pre-activations `z [B, 4H]` (order i, f, c, o)."""
    i, f, g, o = tf.split(z, 4, axis=-1)
    c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    h_new = tf.sigmoid(o) * tf.tanh(c_new)
    return h_new, c_new


def _apply_reset(reset_t, init, h, c):
    r = reset_t[:, None]  # [B, 1]
    return tf.where(r, init.h, h), tf.where(r, init.c, c)


def _apply_mask(mask_t, h_prev, c_prev, h_new, c_new):
    m = mask_t[:, None]  # [B, 1]
    h = tf.where(m, h_new, h_prev)
    c = tf.where(m, c_new, c_prev)
    return h, c, tf.where(m, h_new, tf.zeros_like(h_new))


def layer_sequence(xproj, state, recurrent_kernel, reset=None, init=None,
                   mask=None, recurrent_dropout_mask=None):
    """Runs one layer given its input projection for every step.

    Args:
      xproj: `[T, B, 4H]`, `x_t @ kernel + bias` for every step.
      state: `LSTMState` `[B, H]` before the first step.
      recurrent_kernel: `[H, 4H]`.
      reset: optional bool `[T, B]`; where True the state is replaced by
        `init` before step t.
      init: `LSTMState` `[B, H]` that a reset restores.
      mask: optional bool `[T, B]`; where False the state passes through and
        the output is zero.
      recurrent_dropout_mask: optional `[B, H]` multiplied into `h` before
        `h @ recurrent_kernel`.

    Returns:
      `(outputs [T, B, H], final LSTMState)`.
    """
    steps = tf.shape(xproj)[0]
    compute, dtype = xproj.dtype, state.h.dtype
    rdp = (None if recurrent_dropout_mask is None
           else tf.cast(recurrent_dropout_mask, dtype))
    outputs = tf.TensorArray(compute, size=steps,
                             element_shape=state.h.shape)

    def body(t, h, c, outputs):
        if reset is not None:
            h, c = _apply_reset(reset[t], init, h, c)
        h_in = h if rdp is None else h * rdp
        z = tf.cast(xproj[t], dtype) + tf.cast(tf.matmul(
            tf.cast(h_in, compute), recurrent_kernel), dtype)  # [B, 4H]
        h_new, c_new = gates(z, c)
        out = h_new
        if mask is not None:
            h_new, c_new, out = _apply_mask(mask[t], h, c, h_new, c_new)
        return t + 1, h_new, c_new, outputs.write(t, tf.cast(out, compute))

    # maximum_iterations bounds the gradient's accumulators, which XLA needs.
    _, h, c, outputs = tf.while_loop(
        lambda t, *_: t < steps, body, (tf.constant(0), state.h, state.c,
                                        outputs), maximum_iterations=steps)
    return outputs.stack(), LSTMState(h, c)


def cell_sequence(cells, x, state, reset=None, init=None, mask=None,
                  dropout_masks=None, recurrent_dropout_masks=None):
    """Reference path: steps every `LSTMCell` of the stack at each timestep.

    `x` is `[T, B, D]`; `state`/`init` are tuples of `LSTMState`; masks as in
    `layer_sequence`; dropout masks are per-layer lists (or None). Returns
    `(top-layer outputs [T, B, H], final state)`. The cells compute in the
    compute dtype (`x`'s); the state between steps keeps its own dtype.
    """
    steps = tf.shape(x)[0]
    num_layers = len(cells)
    outputs = tf.TensorArray(x.dtype, size=steps,
                             element_shape=state[-1].h.shape)
    flat = [t for s in state for t in s]

    def body(t, outputs, *flat):
        inp = x[t]
        new_flat = []
        for i, cell in enumerate(cells):
            h, c = flat[2 * i], flat[2 * i + 1]
            if reset is not None:
                h, c = _apply_reset(reset[t], init[i], h, c)
            if dropout_masks is not None:
                inp = inp * dropout_masks[i]
            h_in = tf.cast(h, x.dtype)
            if recurrent_dropout_masks is not None:
                h_in = h_in * recurrent_dropout_masks[i]
            # Recurrent dropout only touches h on its way into the recurrent
            # matmul, as in LSTMCell, so applying it beforehand is the same.
            h_new, (_, c_new) = cell.call(inp, [h_in, tf.cast(c, x.dtype)],
                                          training=False)
            h_new, c_new = tf.cast(h_new, h.dtype), tf.cast(c_new, c.dtype)
            out = h_new
            if mask is not None:
                h_new, c_new, out = _apply_mask(mask[t], h, c, h_new, c_new)
            new_flat += [h_new, c_new]
            inp = tf.cast(out, x.dtype)
        return (t + 1, outputs.write(t, inp), *new_flat)

    result = tf.while_loop(lambda t, *_: t < steps, body,
                           (tf.constant(0), outputs, *flat),
                           maximum_iterations=steps)
    final = tuple(LSTMState(result[2 + 2 * i], result[3 + 2 * i])
                  for i in range(num_layers))
    return result[1].stack(), final
