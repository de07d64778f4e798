"""Task losses and metrics, as weighted sums so that batches add up exactly.

The per-step loss and the metric are the task class's (task_classes.py):
- sine, csv: loss = weighted mean squared error over the target features;
  sine's metric is its root (rmse), csv's is the mean absolute error in the
  data's own units (mae, using the saved normalisation).
- text: loss = cross-entropy in nats; metric = bits per character.
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
    per_step = task.step_loss(outputs, targets)
    return {"loss": tf.reduce_sum(per_step * weights),
            "metric": task.metric_sum(outputs, targets, weights),
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
    metric = task.metric_value(loss, sums["metric"], count, sqrt)
    return {"loss": loss, task.metric: metric}
