"""The train step: one compiled function per run (trainer.py drives it).

Per replica, the policy's forward pass over the batch from its start state,
the loss scaled by the global batch's weight, and the gradients; then the
gradients all-reduced, clipped as one, and applied only when the loss and
gradient norm are finite; the final state kept as the policy says.
"""

import keras
import tensorflow as tf

from lstm_ctl.core import state as state_lib
from lstm_ctl.data import losses
from lstm_ctl.run.builders import batch_signature
from lstm_ctl.train import distribute


def make_train_step(model, optimizer, task, strategy, policy, clip_norm,
                    jit_compile=False, on_trace=None, batch_size=None):
    """The compiled train step `(batch, state, force_reset) -> (metrics,
    final state, gradients)`: the policy's start state, the forward pass
    and loss per replica, the all-reduced and clipped gradients applied when
    finite, and what the policy keeps. `on_trace()` is called at each
    trace (the tests count them). `batch_size`: the global batch, fixed in
    the signature (the pipeline's own, static because every pipeline drops
    a partial last batch), so that the layers cut it into shards when
    tracing (`core/shards.py`) instead of tracing every shard count for a
    choice at run time; None: any batch size."""
    batch_spec, state_spec = batch_signature(task, model)
    # --precision=mixed_float16: gradients of the scaled loss, unscaled
    # for clipping; the optimizer skips overflowing steps and lowers its
    # scale (then only a non-finite loss stops training).
    scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    batch_spec = policy.signature(batch_spec)
    if batch_size:   # every key's first axis is the batch
        batch_spec = {k: tf.TensorSpec([batch_size, *s.shape[1:]], s.dtype)
                      for k, s in batch_spec.items()}

    def replica_fn(batch, state, global_count):
        batch, state = distribute.replica_rows((batch, state))
        with tf.GradientTape() as tape:
            # final_state: what the policy keeps (see policy.forward).
            outputs, final_state = policy.forward(model, batch, state)
            sums = losses.batch_sums(task, outputs, batch["targets"],
                                     batch["weights"])
            # Scaled by the global batch's weight: summed over replicas
            # this is the mean loss of the whole batch.
            loss = sums["loss"] / global_count
            scaled_loss = optimizer.scale_loss(loss) if scaling else loss
        variables = model.trainable_variables
        grads = tape.gradient(scaled_loss, variables)
        if scaling:
            grads = [g / optimizer.dynamic_scale for g in grads]
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        if replicas > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
        # Clip the whole batch's gradient, the same on every replica.
        grad_norm = tf.linalg.global_norm(grads)
        finite = tf.math.is_finite(loss)
        if not scaling:
            finite = tf.logical_and(finite, tf.math.is_finite(grad_norm))
        if clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm,
                                              use_norm=grad_norm)
        lr = optimizer.learning_rate  # before this step's update
        # The Keras optimizer sums gradients over replicas again.
        scaled = [g / replicas for g in grads] if replicas > 1 else grads
        if scaling:
            scaled = [g * optimizer.dynamic_scale for g in scaled]
        distribute.apply_if_finite(optimizer, finite, scaled, variables)
        return (sums, tf.nest.flatten(final_state), grads, grad_norm, lr,
                finite)

    def step_fn(batch, state, force_reset):
        if on_trace is not None:
            on_trace()
        batch = dict(batch, reset_mask=state_lib.reset_first_step(
            batch["reset_mask"], force_reset))  # --reset_every
        global_count = tf.maximum(tf.reduce_sum(batch["weights"]), 1.0)
        count = tf.identity(optimizer.iterations)  # before this update
        state, state_metrics = policy.start_state(model, batch, state,
                                                  count)
        sums, final_state, grads, grad_norm, lr, finite = strategy.run(
            replica_fn, args=(batch, state, global_count))
        sums = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v,
                                   axis=None) for k, v in sums.items()}
        first_replica = strategy.experimental_local_results
        metrics = losses.finalize(task, sums)
        metrics.update(grad_norm=first_replica(grad_norm)[0],
                       learning_rate=first_replica(lr)[0],
                       finite=first_replica(finite)[0], **state_metrics)
        # Gathered tensor by tensor: strategy.gather on a list or tuple
        # (TF 2.21) returns one replica's rows only.
        final_state = tf.nest.pack_sequence_as(
            state, [strategy.gather(t, axis=0) for t in final_state])
        policy.keep(batch, final_state, metrics["finite"], count)
        grads = [first_replica(g)[0] for g in grads]
        return metrics, final_state, grads

    return tf.function(
        step_fn, jit_compile=jit_compile, autograph=False,
        input_signature=[batch_spec, state_spec,
                         tf.TensorSpec([], tf.bool)])
