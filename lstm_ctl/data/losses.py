"""Task losses and metrics, as weighted sums so that batches add up exactly.

- mse tasks (sine, csv): loss = weighted mean squared error over the target
  features; sine's metric is its root (rmse), csv's is the mean absolute
  error in the data's own units (mae, using the saved normalisation).
- xent (text): loss = cross-entropy in nats; metric = bits per character.
"""

import math

import tensorflow as tf


def batch_sums(task, outputs, targets, weights):
    """Weighted sums over one batch: `{"loss", "metric", "count"}` tensors.

    `outputs` `[B, T, O]`; `targets` `[B, T, O]` (or `[B, T]` ids); `weights`
    `[B, T]`. "metric" is a sum only where the metric is not a function of
    the mean loss (csv's mae); otherwise it is 0.
    """
    weights = tf.cast(weights, outputs.dtype)
    count = tf.reduce_sum(weights)
    metric = tf.zeros([], outputs.dtype)
    if task.loss == "xent":
        per_step = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(targets, tf.int32), logits=outputs)
    else:
        err = outputs - tf.cast(targets, outputs.dtype)
        per_step = tf.reduce_mean(tf.square(err), axis=-1)
        if task.metric == "mae":
            std = tf.constant([task.norm["std"][i] for i in task.norm["targets"]],
                              outputs.dtype)
            metric = tf.reduce_sum(
                tf.reduce_mean(tf.abs(err) * std, axis=-1) * weights)
    return {"loss": tf.reduce_sum(per_step * weights), "metric": metric,
            "count": count}


def finalize(task, sums):
    """Mean loss and the task metric from (possibly accumulated) sums.

    Works on tensors (inside a train step) and on Python floats.
    """
    count = sums["count"]
    if isinstance(count, (int, float)):
        count = max(count, 1e-12)
        loss = sums["loss"] / count
        sqrt = math.sqrt
    else:
        count = tf.maximum(count, 1e-12)
        loss = sums["loss"] / count
        sqrt = tf.sqrt
    if task.metric == "rmse":
        metric = sqrt(loss)
    elif task.metric == "bpc":
        metric = loss / math.log(2.0)
    else:
        metric = sums["metric"] / count
    return {"loss": loss, task.metric: metric}
