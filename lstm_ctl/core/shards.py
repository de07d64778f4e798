"""Batch shards: one layer's batch cut into slices that run side by side.

XLA:CPU runs a compiled loop on one core at a time and spreads a per-step
matmul as small as `[32, 128] @ [128, 512]` over several cores poorly. So
`run` cuts the batch into shards, calls the layer once per shard (each call
its own compiled forward and backward), and TensorFlow's executor runs the
calls side by side, one per core. Rows are independent, so the result is the
same; the tape sums the kernels' gradients over the shards.

All sequences are time-major: `x`, `reset`, `mask` are cut on axis 1, the
`[B, ...]` state and masks on axis 0.
"""

import os

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from lstm_ctl.core.state import LSTMState

# Measured (one layer's train step, T=100 D=32 H=128, 2 cores): B=16 17.5 ->
# 11.0 ms in two shards, B=8 8-12 -> 6.6-7.1 ms; B=2 3.7 -> 5.2 ms (shards
# of one row lose more in matmul speed than they win).
MIN_SHARD_ROWS = 4


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def shard_counts():
    """The shard counts worth trying here: 1, 2, 4, ... up to the cores, or
    up to TensorFlow's inter-op threads where the user has limited those.

    Only 1 when shards could not run side by side: eagerly (calls run one
    after another), inside an outer XLA function (all in one program), or
    when a GPU is visible (the layer runs there, as one launch).
    """
    if (tf.executing_eagerly() or tf.config.list_logical_devices("GPU")
            or control_flow_util.GraphOrParentsInXlaContext(
                tf.compat.v1.get_default_graph())):
        return [1]
    most = _cores()
    inter_op = tf.config.threading.get_inter_op_parallelism_threads()
    if inter_op > 0:  # 0: TensorFlow's default, one per core
        most = min(most, inter_op)
    counts = [1]
    while counts[-1] * 2 <= most:
        counts.append(counts[-1] * 2)
    return counts


def run(layer, inputs, **fixed):
    """`layer(inputs, **fixed)` on the most shards of at least
    MIN_SHARD_ROWS rows that `shard_counts` allows, joined again:
    `(outputs [T, B, H], final LSTMState)`. `inputs`: a `LayerInputs`.

    The count is chosen when tracing if the batch size is known then, else
    at run time (`tf.switch_case`). `fixed` (kernels, flags) goes to every
    shard whole.
    """
    counts = shard_counts()
    batch = inputs.x.shape[1]
    if batch is not None or len(counts) == 1:
        fit = [n for n in counts if n * MIN_SHARD_ROWS <= (batch or 0)]
        return _sharded(fit[-1] if fit else 1, layer, inputs, **fixed)
    branch = tf.reduce_sum(tf.cast(
        tf.constant(counts[1:]) * MIN_SHARD_ROWS <= tf.shape(inputs.x)[1],
        tf.int32))
    # Each branch is a function of its own: a gradient through a branch
    # cannot reach the tensors that `tf.custom_gradient` keeps inside it.
    branches = [tf.function(lambda n=n: _sharded(n, layer, inputs, **fixed),
                            autograph=False) for n in counts]
    return tf.switch_case(branch, branches)


def _sharded(shards, layer, inputs, **fixed):
    """`layer` on `shards` even slices of the batch, joined again."""
    if shards == 1:
        return layer(inputs, **fixed)
    batch = inputs.x.shape[1]
    if batch is not None:
        sizes = [batch // shards + (i < batch % shards) for i in range(shards)]
    else:
        batch = tf.shape(inputs.x)[1]
        sizes = batch // shards + tf.cast(tf.range(shards) < batch % shards,
                                          batch.dtype)
    outs, hs, cs = [], [], []
    for piece in inputs.split(sizes, shards):
        out, final = layer(piece, **fixed)
        outs.append(out)
        hs.append(final.h)
        cs.append(final.c)
    return tf.concat(outs, 1), LSTMState(tf.concat(hs, 0), tf.concat(cs, 0))
