"""The fast path: one LSTM layer over a sequence, XLA-compiled, with a
hand-written backward pass.

Forward and backward are each a `tf.function(jit_compile=True)`;
`tf.custom_gradient` joins them, so no gradient is taken through a compiled
loop (TensorFlow cannot do that across an XLA boundary). The forward does the
input projection of all timesteps as one matmul, then one `h @
recurrent_kernel` per step; the backward does one `dz @ recurrent_kernel^T`
per step, and the gradients of both kernels and of the inputs as single
large matmuls over all timesteps after its loop.

Measured on XLA:CPU, three sigmoids and a tanh per step cost as much as the
recurrent matmul, so the four gate activations are one tanh over `[B, 4H]`:
sigmoid(x) = tanh(x / 2) / 2 + 1 / 2.

All tensors are time-major: sequences `[T, B, ...]`, masks `[T, B]`.

Dtypes: the inputs, kernels and outputs are in the compute dtype (bfloat16
under a mixed policy); the state, the gate math and everything saved for
the backward pass are in the state's dtype (float32), so only the matmuls
run in the compute dtype and the state does not drift.
"""

from typing import Any, NamedTuple, Optional

import tensorflow as tf

try:  # TensorFlow's own test of whether a tape records an op
    from tensorflow.python.eager import record
except ImportError:  # moved: saves only with training=True, still exact
    record = None

from lstm_ctl.core import layer as layer_lib
from lstm_ctl.core import loop
from lstm_ctl.core import shards
from lstm_ctl.core.state import LSTMState

# autograph=False: the loops are explicit, and autograph costs seconds of
# tracing time.
_JIT = dict(jit_compile=True, reduce_retracing=True, autograph=False)


class Args(NamedTuple):
    """The compiled forward's inputs (and, with `Saved`, the backward's)."""

    x: Any                 # [T, B, D], compute dtype
    kernel: Any            # [D, 4H]
    recurrent_kernel: Any  # [H, 4H]
    bias: Any              # [4H]
    h0: Any                # [B, H], the state's dtype
    c0: Any
    reset: Optional[Any]   # bool [T, B]
    init_h: Optional[Any]  # [B, H]: what a reset restores
    init_c: Optional[Any]
    mask: Optional[Any]    # bool [T, B]
    rdp: Optional[Any]     # [B, H] recurrent dropout mask, the state's dtype


class Saved(NamedTuple):
    """What the saving forward keeps for the backward."""

    acts: Any                     # [T, B, 4H] gate activations
    c_new: Any                    # [T, B, H] cell state after each step
    h_prev: Optional[Any] = None  # [T, B, H] h before each step, after any
    c_prev: Optional[Any] = None  # reset (None: the previous step's)


class Grads(NamedTuple):
    """All gradients of one layer."""

    d_x: Any
    d_kernel: Any
    d_recurrent_kernel: Any
    d_bias: Any
    d_h0: Any
    d_c0: Any
    d_init_h: Any
    d_init_c: Any


def _where(m, a, b):
    return a if m is None else tf.where(m[:, None], a, b)


def _gate_scale(units, dtype):
    """`s` with `tanh(z * s) * s + (1 - s)` = sigmoid/tanh per gate column.

    s = 1/2 on the i, f, o columns (a sigmoid) and 1 on the c column (tanh).
    """
    half = tf.fill([units], tf.constant(0.5, dtype))
    return tf.concat([half, half, tf.ones([units], dtype), half], 0)  # [4H]


def _forward(args, save):
    """Runs the layer on `args` (an `Args`): `(outputs, h, c, saved)`, with
    `saved` a `Saved` when `save`, else None.

    Saved: the gate activations `[T, B, 4H]` and the new cell states
    `[T, B, H]`; with a reset or a mask also h and c before each step
    (without them, those are the previous step's and are not stored twice).
    """
    (x, kernel, recurrent_kernel, bias, h0, c0, reset, init_h, init_c, mask,
     rdp) = args
    shape = tf.shape(x)
    steps = shape[0]
    compute, dtype = x.dtype, h0.dtype
    # The bias is added in the loop, where it fuses into the gate math,
    # rather than in a pass of its own over `[T, B, 4H]`.
    xproj = tf.reshape(tf.matmul(tf.reshape(x, [-1, shape[2]]), kernel),
                       [steps, shape[1], -1])
    bias = tf.cast(bias, dtype)
    scale = _gate_scale(tf.shape(h0)[1], dtype)
    offset = 1.0 - scale
    explicit_prev = reset is not None or mask is not None
    # With `save`, the gate activations are written over the projection,
    # in place: no second `[T, B, 4H]` array to zero-fill.
    zs = tf.TensorArray(dtype, size=steps).unstack(tf.cast(xproj, dtype))
    count = 1 + (1 if save else 0) + (2 if save and explicit_prev else 0)
    arrays = [zs] + [tf.TensorArray(compute if k == 0 else dtype, size=steps)
                     for k in range(count)]

    def body(t, h, c, *arrays):
        if reset is not None:
            h = _where(reset[t], init_h, h)
            c = _where(reset[t], init_c, c)
        h_in = h if rdp is None else h * rdp
        z = arrays[0].read(t) + bias + tf.cast(tf.matmul(
            tf.cast(h_in, compute), recurrent_kernel), dtype)  # [B, 4H]
        acts = tf.tanh(z * scale) * scale + offset  # i, f, g, o activated
        i, f, g, o = tf.split(acts, 4, axis=1)
        c_new = f * c + i * g
        h_new = o * tf.tanh(c_new)
        m = None if mask is None else mask[t]
        h_state, c_state = _where(m, h_new, h), _where(m, c_new, c)
        arrays = list(arrays)
        arrays[1] = arrays[1].write(t, tf.cast(
            _where(m, h_new, tf.zeros_like(h_new)), compute))
        if save:
            arrays[0] = arrays[0].write(t, acts)
            arrays[2] = arrays[2].write(t, c_new)
            if explicit_prev:
                arrays[3] = arrays[3].write(t, h)  # h_{t-1} after any reset
                arrays[4] = arrays[4].write(t, c)  # c_{t-1} after any reset
        return (t + 1, h_state, c_state, *arrays)

    result = tf.while_loop(lambda t, *_: t < steps, body,
                           (tf.constant(0), h0, c0, *arrays),
                           maximum_iterations=steps)
    out, h, c = result[4].stack(), result[1], result[2]
    if not save:
        return out, h, c, None
    return out, h, c, Saved(result[3].stack(),
                            *[a.stack() for a in result[5:]])


def _shifted(first, seq):
    """`[first, seq[0], ..., seq[T-2]]`: the value before each step."""
    return tf.concat([first[None], seq[:-1]], 0)


def _backward_factors(acts, c_new, c_prev, c0):
    """The chain rule's factors that do not depend on the recurrence.

    Computed for all timesteps at once: `d_cn_from_h [T, B, H]` (dc from
    dh) and `d_z_factor [T, B, 4H]` (d_z = [dc, dc, dc, dh] * d_z_factor).
    `c_prev=None`: the previous step's c.
    """
    if c_prev is None:
        c_prev = _shifted(c0, c_new)
    i, f, g, o = tf.split(acts, 4, axis=2)
    tanh_c = tf.tanh(c_new)
    d_cn_from_h = o * (1.0 - tanh_c * tanh_c)
    d_z_factor = tf.concat([g * i * (1.0 - i), c_prev * f * (1.0 - f),
                            i * (1.0 - g * g), tanh_c * o * (1.0 - o)], 2)
    return d_cn_from_h, d_z_factor


def _backward_loop(d_out, d_h, d_c, d_cn_from_h, d_z_factor, acts,
                   recurrent_kernel, reset, mask, rdp):
    """The recurrence, last step first: returns `(d_z [T, B, 4H], d_h0, d_c0,
    d_init_h, d_init_c)` with one `d_z @ recurrent_kernel^T` per step.

    The kernel is transposed once before the loop: on XLA:CPU a matmul with
    `transpose_b` in the loop was 1.5x slower at B=32.
    """
    steps = tf.shape(d_out)[0]
    units = tf.shape(d_h)[1]
    compute, dtype = recurrent_kernel.dtype, d_h.dtype
    kernel_t = tf.transpose(recurrent_kernel)  # [4H, H]
    d_z = tf.TensorArray(dtype, size=steps)
    zeros = tf.zeros_like(d_h)

    def body(k, d_h, d_c, d_init_h, d_init_c, d_z):
        t = steps - 1 - k
        m = None if mask is None else mask[t][:, None]
        d_hn = d_h + tf.cast(d_out[t], dtype)
        d_cn = d_c
        if m is not None:
            d_hn = tf.where(m, d_hn, 0.0)
            d_cn = tf.where(m, d_cn, 0.0)
        d_cn = d_cn + d_hn * d_cn_from_h[t]
        dz = tf.concat([d_cn, d_cn, d_cn, d_hn], 1) * d_z_factor[t]
        d_hp = tf.cast(tf.matmul(tf.cast(dz, compute), kernel_t), dtype)
        if rdp is not None:
            d_hp = d_hp * rdp
        d_cp = d_cn * acts[t][:, units:2 * units]  # * f
        if m is not None:
            d_hp = tf.where(m, d_hp, d_h)
            d_cp = tf.where(m, d_cp, d_c)
        if reset is not None:
            r = reset[t][:, None]
            d_init_h += tf.where(r, d_hp, 0.0)
            d_init_c += tf.where(r, d_cp, 0.0)
            d_hp = tf.where(r, 0.0, d_hp)
            d_cp = tf.where(r, 0.0, d_cp)
        return k + 1, d_hp, d_cp, d_init_h, d_init_c, d_z.write(t, dz)

    _, d_h0, d_c0, d_init_h, d_init_c, d_z = tf.while_loop(
        lambda k, *_: k < steps, body, (tf.constant(0), d_h, d_c, zeros,
                                        zeros, d_z),
        maximum_iterations=steps)
    return d_z.stack(), d_h0, d_c0, d_init_h, d_init_c


def _backward_weights(d_z, x, h_prev, h0, out, rdp):
    """Gradients of the kernels and bias over all `T * B` rows.

    Two matmuls, `x^T @ d_z` and `h_prev^T @ d_z`: one matmul over
    `[x, h_prev]` was slower on A by the copy that joins them.
    `h_prev=None`: the previous step's outputs. The matmuls run in the
    compute dtype (`x`'s), the bias's sum in the state's (`d_z`'s).
    """
    compute = x.dtype
    h_prev = (_shifted(tf.cast(h0, compute), out) if h_prev is None
              else tf.cast(h_prev, compute))
    units = tf.shape(h_prev)[2]
    d_z = tf.reshape(d_z, [-1, 4 * units])  # [T*B, 4H]
    d_bias = tf.cast(tf.reduce_sum(d_z, 0), compute)
    d_z = tf.cast(d_z, compute)
    h_in = h_prev if rdp is None else h_prev * tf.cast(rdp, compute)
    d_kernel = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[2]]), d_z,
                         transpose_a=True)  # [D, 4H]
    d_recurrent_kernel = tf.matmul(tf.reshape(h_in, [-1, units]), d_z,
                                   transpose_a=True)  # [H, 4H]
    return d_kernel, d_recurrent_kernel, d_bias


def _backward_inputs(d_z, kernel):
    """`d_x [T, B, D]`: a function of its own, so that TensorFlow prunes it
    when nothing asks for the inputs' gradient (the first layer's, mostly:
    on C that matmul is a sixth of the backward's FLOPs)."""
    shape = tf.shape(d_z)
    d_x = tf.matmul(tf.reshape(tf.cast(d_z, kernel.dtype), [-1, shape[2]]),
                    kernel, transpose_b=True)
    return tf.reshape(d_x, [shape[0], shape[1], -1])


# Compiled once per pattern of optional inputs (reset, mask, dropout); XLA
# then compiles per shape, without retracing.
@tf.function(**_JIT)
def _forward_saving(args):
    return _forward(args, save=True)


@tf.function(**_JIT)
def _forward_only(args):
    return _forward(args, save=False)


# The backward runs as three compiled stages: measured on config C, one
# function holding all three was 20-30% slower (XLA fuses across them badly).
_factors_compiled = tf.function(_backward_factors, **_JIT)
_loop_compiled = tf.function(_backward_loop, **_JIT)
_weights_compiled = tf.function(_backward_weights, **_JIT)
_inputs_compiled = tf.function(_backward_inputs, **_JIT)


def _backward(d_out, d_h, d_c, args, out, saved):
    """All gradients of one layer (`Grads`), given the gradients of its
    outputs and final h and c, its `Args`, its outputs and what its forward
    `Saved`."""
    # Without resets or padding (h_prev, c_prev None), the states before
    # each step are the previous step's: they were not stored twice.
    factors = _factors_compiled(saved.acts, saved.c_new, saved.c_prev,
                                args.c0)
    d_z, d_h0, d_c0, d_init_h, d_init_c = _loop_compiled(
        d_out, d_h, d_c, *factors, saved.acts, args.recurrent_kernel,
        args.reset, args.mask, args.rdp)
    d_kernel, d_recurrent_kernel, d_bias = _weights_compiled(
        d_z, args.x, saved.h_prev, args.h0, out, args.rdp)
    return Grads(d_x=_inputs_compiled(d_z, args.kernel), d_kernel=d_kernel,
                 d_recurrent_kernel=d_recurrent_kernel, d_bias=d_bias,
                 d_h0=d_h0, d_c0=d_c0, d_init_h=d_init_h, d_init_c=d_init_c)


def _cell_step(x_t, kernel, recurrent_kernel, bias, h, c):
    """One timestep of one layer: `x_t [B, D]`, state `[B, H]` -> `(h, c)`.

    One matmul `[x_t, h] @ [kernel; recurrent_kernel]`: at B = 256 to 4,096
    it took 10-20% less CPU time than the two matmuls (the one over D=32 is
    a thin, slow one). The matmul runs in the compute dtype (`x_t`'s), the
    gate math in the state's (`h`'s).
    """
    compute, dtype = x_t.dtype, h.dtype
    joined = tf.concat([x_t, tf.cast(h, compute)], 1)  # [B, D + H]
    z = tf.matmul(joined, tf.concat([kernel, recurrent_kernel], 0)) + bias
    return loop.gates(tf.cast(z, dtype), c)  # z: [B, 4H]


# `model.step`'s layer as one XLA program: the gate math fuses into the
# matmul's output instead of a dozen passes over `[B, 4H]`. Measured in CPU
# time per step (one layer, H=128, D=32, a shared 2-core machine), against
# the same step op by op: B=256 2.3 vs 3.0 ms, 1,024 5.3 vs 7.3 ms, 4,096
# 16.2 vs 18.9 ms. Traced once; XLA compiles once per batch size.
cell_step = tf.function(_cell_step, **_JIT)


def layer_sequence(cell, inputs, training=True):
    """One layer with `cell`'s weights on `inputs` (a `LayerInputs`):
    `(outputs [T, B, H], final LSTMState)`; the contract of `core/layer.py`.

    The forward saves what the backward needs (the gate activations and
    cell states) when a gradient can be asked for: when a `tf.GradientTape`
    records any of its inputs (a user's `model(x)` inside their tape, with
    or without `training=`), or with `training=True`. Otherwise (`model(x)`,
    `predict`) it runs a loop that saves nothing; if a gradient is asked
    for all the same (a tape outside a `tf.function` traced without one),
    the backward reruns the saving loop first. The batch is cut into shards
    that run side by side, one per CPU core (`shards.run`).
    """
    kernel, recurrent_kernel, bias = layer_lib.weights(cell, inputs.x.dtype)
    state, init = inputs.state, inputs.init
    save = bool(training) or gradient_can_be_asked(
        inputs.x, kernel, recurrent_kernel, bias, state.h, state.c,
        *(() if init is None else init))
    return shards.run(_layer, inputs, kernel=kernel,
                      recurrent_kernel=recurrent_kernel, bias=bias, save=save)


def gradient_can_be_asked(*tensors):
    """Whether a `tf.GradientTape` records an op on any of `tensors` now.

    Decided once per layer, eagerly or when tracing the `tf.function` whose
    graph holds the tape, so that every shard makes the same choice. A
    `tf.function` keeps the choice of its trace: traced without a tape and
    later called under one, its backward reruns the saving forward.
    """
    if record is None:  # tests/test_tape_forward.py would say so
        return False
    tensors = [tf.convert_to_tensor(t) for t in tensors if t is not None]
    return bool(record.should_record_backprop(tensors))


def _layer(inputs, kernel, recurrent_kernel, bias, save):
    """`layer_sequence` on one shard: the compiled forward and, through
    `tf.custom_gradient`, the compiled backward."""
    x, state, reset, init, mask, recurrent_dropout_mask = inputs
    has_init = reset is not None
    rdp = (None if recurrent_dropout_mask is None
           else tf.cast(recurrent_dropout_mask, state.h.dtype))

    @tf.custom_gradient
    def run(x, kernel, recurrent_kernel, bias, h0, c0, *init_args):
        ih, ic = init_args if has_init else (None, None)
        # The tape must not record the compiled loop itself (its gradient is
        # `grad` below), or TensorFlow would try to differentiate through it.
        x, kernel, recurrent_kernel, bias, h0, c0, ih, ic = (
            None if a is None else tf.stop_gradient(a)
            for a in (x, kernel, recurrent_kernel, bias, h0, c0, ih, ic))
        args = Args(x, kernel, recurrent_kernel, bias, h0, c0, reset, ih, ic,
                    mask, rdp)
        out, h, c, saved = (_forward_saving if save else _forward_only)(args)

        def grad(d_out, d_h, d_c):
            nonlocal saved
            if saved is None:
                saved = _forward_saving(args)[3]
            g = _backward(
                tf.zeros_like(out) if d_out is None else d_out,
                tf.zeros_like(h) if d_h is None else d_h,
                tf.zeros_like(c) if d_c is None else d_c, args, out, saved)
            return [g.d_x, g.d_kernel, g.d_recurrent_kernel, g.d_bias,
                    g.d_h0, g.d_c0] + ([g.d_init_h, g.d_init_c] if has_init
                                       else [])

        return (out, h, c), grad

    init_args = tuple(init) if has_init else ()
    out, h, c = run(x, kernel, recurrent_kernel, bias, state.h, state.c,
                    *init_args)
    return out, LSTMState(h, c)
