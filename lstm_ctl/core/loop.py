"""The loops over timesteps: one LSTM layer over a whole sequence.

Everything here is time-major: sequences are `[T, B, ...]`, masks `[T, B]`.
Sequences and kernels are in the compute dtype, the state and the gate math
in the state's dtype (float32 under a mixed policy).
Two of the three implementations of `core/layer.py`'s contract:
`layer_sequence` (input projection hoisted out of the loop, one `h @
recurrent_kernel` per step, gate math written out) and
`cell_layer_sequence`, which steps a `keras.layers.LSTMCell` and is the
reference the fused path is tested against.
"""

import tensorflow as tf

from lstm_ctl.core import layer as layer_lib
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


def layer_sequence(cell, inputs, training=True):
    """One layer with `cell`'s weights on `inputs` (a `LayerInputs`), the
    contract of `core/layer.py`: the input projection of every step as one
    matmul, then one `h @ recurrent_kernel` per step in a `tf.while_loop`.
    Returns `(outputs [T, B, H], final LSTMState)`. `training` changes
    nothing here (the dropout masks are inputs)."""
    del training
    x, state, reset, init, mask, rdp = inputs
    kernel, recurrent_kernel, bias = layer_lib.weights(cell, x.dtype)
    shape = tf.shape(x)
    xproj = tf.reshape(tf.matmul(tf.reshape(x, [-1, shape[2]]), kernel)
                       + bias, [shape[0], shape[1], -1])  # [T, B, 4H]
    steps = shape[0]
    compute, dtype = x.dtype, state.h.dtype
    rdp = None if rdp is None else tf.cast(rdp, dtype)
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


def cell_layer_sequence(cell, inputs, training=True):
    """The reference: steps the `keras.layers.LSTMCell` itself (Keras's own
    gate code) at each timestep of `inputs` (a `LayerInputs`), the contract
    of `core/layer.py`. The cell computes in the compute dtype (`x`'s); the
    state between steps keeps its own dtype. `training` changes nothing
    here (the dropout masks are inputs)."""
    del training
    x, state, reset, init, mask, rdp = inputs
    steps = tf.shape(x)[0]
    outputs = tf.TensorArray(x.dtype, size=steps,
                             element_shape=state.h.shape)

    def body(t, h, c, outputs):
        if reset is not None:
            h, c = _apply_reset(reset[t], init, h, c)
        h_in = tf.cast(h, x.dtype)
        if rdp is not None:
            h_in = h_in * tf.cast(rdp, x.dtype)
        # Recurrent dropout only touches h on its way into the recurrent
        # matmul, as in LSTMCell, so applying it beforehand is the same.
        h_new, (_, c_new) = cell.call(x[t], [h_in, tf.cast(c, x.dtype)],
                                      training=False)
        h_new, c_new = tf.cast(h_new, h.dtype), tf.cast(c_new, c.dtype)
        out = h_new
        if mask is not None:
            h_new, c_new, out = _apply_mask(mask[t], h, c, h_new, c_new)
        return t + 1, h_new, c_new, outputs.write(t, tf.cast(out, x.dtype))

    _, h, c, outputs = tf.while_loop(
        lambda t, *_: t < steps, body, (tf.constant(0), state.h, state.c,
                                        outputs), maximum_iterations=steps)
    return outputs.stack(), LSTMState(h, c)
