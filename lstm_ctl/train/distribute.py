"""Training on tf.distribute: strategies, per-replica rows, worker roles.

The train step always takes the global batch and the global carried state
`[B, ...]`. Inside `strategy.run`, replica r of R takes rows
`[r*B/R, (r+1)*B/R)`: always the same rows, so in carry mode each replica
keeps carrying the state of its own streams, and row i of a replica's batch
k+1 continues its row i of batch k. The final state comes back gathered in
replica order, which is the global row order, so a checkpoint holds the
whole state and restores onto any replica count or a single device.
"""

import json
import os

import tensorflow as tf

from lstm_ctl.config import STRATEGIES  # noqa: E402  (re-exported)


def configure_cpu_replicas(count):
    """Splits the CPU into `count` logical devices (before TF initializes)."""
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as e:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing < count:
            raise ValueError(
                f"--cpu_replicas={count} must be set before TensorFlow starts;"
                f" this process already has {existing} CPU device(s).") from e


_STRATEGIES = {}


def make_strategy(name, cpu_replicas=0):
    """The tf.distribute strategy for `--strategy` (and `--cpu_replicas`).

    One strategy object per kind and process: two MirroredStrategy objects
    over the same devices reuse collective group and instance keys, and the
    second one's all-reduces then fail with shape mismatches.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got "
                         f"{name!r}")
    key = (name, cpu_replicas)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _new_strategy(name, cpu_replicas)
    return _STRATEGIES[key]


def _new_strategy(name, cpu_replicas):
    if name == "mirrored":
        devices = None
        if cpu_replicas:
            configure_cpu_replicas(cpu_replicas)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")
                       ][:cpu_replicas]
        return tf.distribute.MirroredStrategy(devices)
    if "TF_CONFIG" not in os.environ:
        raise ValueError("--strategy=multi_worker needs TF_CONFIG (the "
                         "cluster and this worker's task) in the environment "
                         "of every worker.")
    return tf.distribute.MultiWorkerMirroredStrategy()


def check_batch_size(strategy, batch_size):
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"--batch_size={batch_size} (the global batch) is not divisible "
            f"by the {replicas} replicas of the strategy; use a multiple of "
            f"{replicas}.")


def replica_rows(tensors):
    """This replica's rows of global-batch tensors (inside strategy.run)."""
    ctx = tf.distribute.get_replica_context()
    replicas, index = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group

    def rows(t):
        if t.shape[0] is None:
            per = tf.shape(t)[0] // replicas
            return t[index * per:(index + 1) * per]
        per = t.shape[0] // replicas   # known when tracing: keep it known
        return tf.ensure_shape(t[index * per:(index + 1) * per],
                               [per, *t.shape[1:]])

    return tf.nest.map_structure(rows, tensors)


def apply_if_finite(optimizer, finite, grads, variables):
    """`optimizer.apply_gradients` only where `finite` (inside strategy.run).

    Under strategies that synchronise through `merge_call` (MirroredStrategy)
    the condition must be taken in cross-replica context, as Keras's
    LossScaleOptimizer does; `finite` is the same on every replica.
    """
    def apply(grads):
        optimizer.apply_gradients(zip(grads, variables))

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: apply(grads), lambda: None)
        return

    def cross_replica(distribution, finite, grads):
        finite = distribution.experimental_local_results(finite)[0]
        tf.cond(finite, lambda: distribution.extended.call_for_each_replica(
            apply, args=(grads,)), lambda: None)

    tf.distribute.get_replica_context().merge_call(cross_replica,
                                                   args=(finite, grads))


def task():
    """`(type, index)` of this worker from TF_CONFIG; ("chief", 0) without."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    t = config.get("task") or {}
    return t.get("type", "chief"), int(t.get("index", 0))


def is_chief(strategy):
    """Whether this worker writes checkpoints, summaries and progress."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    kind, index = task()
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return kind == "chief"
    return kind == "worker" and index == 0


def worker_dir(model_dir, strategy):
    """Where this worker saves: the model dir for the chief, a private
    scratch dir for the others (they must take part in saving, but their
    copies are not kept)."""
    if is_chief(strategy):
        return model_dir
    kind, index = task()
    return os.path.join(model_dir, f".{kind}_{index}")
