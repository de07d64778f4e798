"""The state policy of training: what state starts a batch, what is kept.

- "carry": the final state of batch k, through `tf.stop_gradient`, starts
  batch k+1 (batches in stream order, truncated backprop through time).
- "reset": shuffled chunks, each from the initial state.
- "windows": `batch_size` windows of `seq_len` steps drawn from any start
  in any stream (stride 1), each from the initial state (random windows, as
  forecasting libraries train on a short series).
- "stored": shuffled chunks, each from the state stored for it: the state
  its predecessor (the chunk before it in the same stream) reached where
  this chunk's window starts, the last time the predecessor was trained;
  the initial state until then and at every stream start (R2D2,
  Kapturowski et al., ICLR 2019). The table is the checkpointed
  `stored_state`.
- `burn_in=N` (reset and stored): each chunk's window starts N steps
  earlier; those steps run from the window's start state without dropout,
  loss or gradient, and the state after them (through `tf.stop_gradient`)
  starts the trained span.

A chunk's window is `[kT - N, (k+1)T)`, so its predecessor's window reaches
the start of this one after exactly T steps: that state (the final state
when N = 0) is what a stored-mode step keeps for the successor.
"""

import tensorflow as tf

from lstm_ctl.data import pipelines
from lstm_ctl.core import state as state_lib
from lstm_ctl.core.state import LSTMState


def max_burn_in(arrays, seq_len):
    """The most steps any chunk has before it in its lane."""
    return (arrays.steps // seq_len - 1) * seq_len


# ---------------------------------------------------------------- policy
class StoredStates(tf.Module):
    """One state per chunk, `h_<layer>`, `c_<layer>` `[chunks, H]`, and
    `written [chunks]`: the optimizer's update count when each was computed
    (-1: never)."""

    def __init__(self, chunks, num_layers, units):
        super().__init__(name="stored_state")
        with tf.init_scope():
            def make(part, i):
                return tf.Variable(tf.zeros([chunks, units]), trainable=False,
                                   name=f"{part}_{i}")
            self.h = [make("h", i) for i in range(num_layers)]
            self.c = [make("c", i) for i in range(num_layers)]
            self.written = tf.Variable(
                tf.fill([chunks], tf.constant(-1, tf.int64)),
                trainable=False, name="written")

    def gather(self, index):
        """The stored states of chunks `index [B]`."""
        return tuple(LSTMState(tf.gather(h, index), tf.gather(c, index))
                     for h, c in zip(self.h, self.c))

    def scatter(self, index, state, count):
        """Stores `state` for chunks `index [B]`, computed at update
        `count`."""
        index = index[:, None]
        for h, c, s in zip(self.h, self.c, state):
            h.scatter_nd_update(index, s.h)
            c.scatter_nd_update(index, s.c)
        self.written.scatter_nd_update(
            index, tf.fill(tf.shape(index)[:1], tf.cast(count, tf.int64)))


def check(config, arrays):
    """A burn-in the data cannot give is an error (a ValueError)."""
    limit = max_burn_in(arrays, config.data.seq_len)
    if config.burn_in > limit:
        raise ValueError(
            f"--burn_in={config.burn_in} is longer than the {limit} steps "
            f"that precede the last chunk of a stream lane ({arrays.steps} "
            f"steps per lane, --seq_len={config.data.seq_len}); use "
            f"--burn_in <= {limit}.")


class StatePolicy:
    """What state starts each example of a batch and what is kept after."""

    def __init__(self, config, arrays):
        check(config, arrays)
        self.mode, self.burn_in = config.state_mode, config.burn_in
        self.seq_len = config.data.seq_len
        self.seed = config.seed
        self.batch_size = config.data.batch_size
        # Reset mode without a burn-in keeps the plain shuffled pipeline.
        self.windowed = self.mode == "stored" or self.burn_in > 0
        self.table = None
        if self.mode == "stored":
            chunks = arrays.lanes * (arrays.steps // self.seq_len)
            self.table = StoredStates(chunks, config.model.num_layers,
                                      config.model.units)

    @property
    def label(self):
        """The mode as the progress line shows it: `stored, burn-in 20`."""
        return self.mode + (f", burn-in {self.burn_in}" if self.burn_in
                            else "")

    def dataset(self, task, arrays, shuffle=True, autotune=False):
        if not self.windowed:
            return pipelines.train_dataset(task, arrays, self.seq_len,
                                           self.mode, self.seed,
                                           self.batch_size, autotune)
        return pipelines.window_dataset(task, arrays, self.seq_len,
                                        self.burn_in, self.seed,
                                        shuffle=shuffle, autotune=autotune)

    def signature(self, batch_spec):
        """The train step's batch signature, with this policy's extra keys."""
        if not self.windowed:
            return batch_spec
        spec = dict(batch_spec, chunk=tf.TensorSpec([None], tf.int32),
                    stream_start=tf.TensorSpec([None], tf.bool))
        if self.burn_in:
            d = batch_spec["inputs"].shape[-1]
            spec.update(
                burn_in_inputs=tf.TensorSpec([None, self.burn_in, d],
                                             tf.float32),
                burn_in_mask=tf.TensorSpec([None, self.burn_in], tf.bool))
        return spec

    # ------------------------------------------ inside the compiled step
    def start_state(self, model, batch, carried, count):
        """`(state, metrics)`: the state each example's window starts from
        (cross-replica context). `carried` is the previous step's final state
        (carry mode); `count` the optimizer's update count."""
        if not self.windowed:
            return carried, {}
        initial = model.initial_state(tf.shape(batch["chunk"])[0])
        if self.table is None:
            return initial, {}
        before = tf.maximum(batch["chunk"] - 1, 0)
        written = tf.gather(self.table.written, before)
        use = tf.logical_and(tf.logical_not(batch["stream_start"]),
                             written >= 0)  # [B]
        state = state_lib.select_state(use, self.table.gather(before),
                                       initial)
        age = tf.where(use, tf.cast(count - written, tf.float32), 0.0)
        used = tf.reduce_sum(tf.cast(use, tf.float32))
        return state, {"state/staleness":
                       tf.reduce_sum(age) / tf.maximum(used, 1.0)}

    def forward(self, model, batch, state, training=True):
        """`(outputs [B, T, O], kept)` from the window's start `state`; in
        the tape. `kept` is the state T steps into the window (the final
        state without burn-in), gradient stopped."""
        state = state_lib.stop_gradient(state)
        x, reset = batch["inputs"], batch["reset_mask"]
        n, t = self.burn_in, self.seq_len
        kept = None
        if n:
            bx, bm = batch["burn_in_inputs"], batch["burn_in_mask"]
            if n > t:  # the successor's window starts inside this burn-in
                _, kept = model(bx[:, :t], initial_state=state, mask=bm[:, :t])
                _, state = model(bx[:, t:], initial_state=kept,
                                 mask=bm[:, t:])
            else:
                _, state = model(bx, initial_state=state, mask=bm)
                kept = state if n == t else None
            state = state_lib.stop_gradient(state)
        if 0 < n < t:  # ... or inside the trained span, at step t - n
            cut = t - n
            head, kept = model(x[:, :cut], initial_state=state,
                               reset_mask=reset[:, :cut], training=training)
            tail, _ = model(x[:, cut:], initial_state=kept,
                            reset_mask=reset[:, cut:], training=training)
            outputs = tf.concat([head, tail], axis=1)
        else:
            outputs, final = model(x, initial_state=state, reset_mask=reset,
                                   training=training)
            kept = final if kept is None else kept
        return outputs, state_lib.stop_gradient(kept)

    def keep(self, batch, kept, finite, count):
        """Stores each example's `kept` state for its successor, unless the
        step was not applied (cross-replica context)."""
        if self.table is None:
            return

        def write():
            self.table.scatter(batch["chunk"], kept, count)
            return tf.constant(True)

        tf.cond(finite, write, lambda: tf.constant(False))
