"""StatePool: the LSTM state of many live streams, stepped in one batch.

A pool holds the state of up to `capacity` streams in fixed storage (one
`[capacity + 1, H]` float32 variable per layer for h and one for c; the last
row is scratch space for padding rows), a map from stream id to row (slot),
and a free list. `step(ids, inputs)` gathers the rows of the streams given,
runs one compiled batched step for all of them, and scatters the new states
back: the gather, the step (or the time loop, for several rows) and the
scatter are one `tf.function` with an `input_signature` (`None` batch and
time), so no batch size or number of rows retraces it, and the batch is
padded up to a few bucket sizes so that the kernels see few distinct
shapes.

A stream that sends k rows runs k steps in order; streams of different
lengths share the batch (a stream with no row left at step t keeps its
state and is not updated). A new id starts from the model's initial state
(zeros or learned). The pool is not thread-safe: call it from one thread
(the server runs every pool call on one worker thread).

With `level_dim=O` (a run trained on the changes of its O targets) the
pool also keeps each stream's last known level (serve/levels.py).

Numbers: the step is `LSTMModel.step` (the same weights and gate math as
`LSTMModel.call`), so a stream served step by step equals the same stream
run through the model in one call (to float32 rounding).
"""

import time

import numpy as np
import tensorflow as tf

from lstm_ctl.core.state import LSTMState
from lstm_ctl.serve import pool_step, snapshots
from lstm_ctl.serve.levels import LevelStore



class PoolFullError(RuntimeError):
    """Every slot of the pool holds a stream: a new id cannot join."""


class UnknownStreamError(LookupError):
    """The pool holds no stream of that id."""

    def __str__(self):  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


def _buckets(capacity, buckets):
    """The batch sizes a step is padded up to: `buckets` (default: the
    powers of two, so padding at most doubles a batch), then `capacity`."""
    if buckets is None:
        buckets = [2 ** k for k in range(int(capacity).bit_length())]
    sizes = sorted({int(b) for b in buckets if 0 < int(b) < capacity})
    return tuple(sizes) + (int(capacity),)


class StatePool:
    """The state of up to `capacity` streams of one `LSTMModel`, by id.

    Args:
      model: a built, non-stateful `LSTMModel`.
      capacity: how many streams the pool holds at once.
      buckets: batch sizes a step is padded up to (default: powers of two;
        the capacity is always the last one).
      idle_timeout: seconds without a step after which `evict_idle` frees a
        stream (None: never).
      on_evict: called as `on_evict(stream_id, state, steps)` before an idle
        stream is freed (`state`: a tuple of `LSTMState` of `[H]` arrays);
        a pool that keeps levels adds the stream's `level` (`[O]`).
      clock: seconds, monotonic (tests pass a fake one).
      level_dim: 0 (a levels run), or O: keep each stream's last known
        level of the O target columns of a changes run (NaN: unknown).
    """

    def __init__(self, model, capacity, buckets=None, idle_timeout=None,
                 on_evict=None, clock=time.monotonic, level_dim=0):
        if getattr(model, "stateful", False):
            raise ValueError("StatePool needs a model built with "
                             "stateful=False: the pool keeps the state.")
        if not model.built or model.input_dim is None:
            raise ValueError("StatePool needs a built model: call it once or "
                             "construct it with input_dim=...")
        if isinstance(capacity, bool) or int(capacity) != capacity or \
                capacity < 1:
            raise ValueError(f"capacity must be a positive integer; got "
                             f"{capacity!r}.")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0 seconds (None: "
                             f"never); got {idle_timeout!r}.")
        self.model = model
        self.capacity = int(capacity)
        self.units = model.units
        self.num_layers = model.num_layers
        self.input_dim = model.input_dim
        self.output_dim = model.output_dim or model.units
        self.buckets = _buckets(self.capacity, buckets)
        self.idle_timeout = idle_timeout
        self.on_evict = on_evict
        self.clock = clock
        self.scratch = self.capacity  # the padding rows' slot
        with tf.init_scope():
            zeros = tf.zeros([self.capacity + 1, self.units], tf.float32)
            self._h = [tf.Variable(zeros, trainable=False, name=f"h_{i}")
                       for i in range(self.num_layers)]
            self._c = [tf.Variable(zeros, trainable=False, name=f"c_{i}")
                       for i in range(self.num_layers)]
        self._slots = {}
        self._free = list(range(self.capacity - 1, -1, -1))  # pop() -> 0
        self._steps = np.zeros(self.capacity, np.int64)
        self._last = np.zeros(self.capacity, np.float64)
        self._levels = LevelStore(self.capacity, level_dim)
        self.level_dim = self._levels.dim
        self.trace_count = 0
        self._one_row, self._run = pool_step.step_functions(
            model, self._h, self._c, self.input_dim, self._traced)

    def _traced(self):
        self.trace_count += 1

    def warmup(self):
        """Traces both compiled functions on the scratch slot only (no
        stream changes), so that the first requests do not wait for it."""
        slots = np.full(1, self.scratch, np.int32)
        fresh = np.ones(1, bool)
        self._one_row(slots, np.zeros([1, self.input_dim], np.float32), fresh)
        self._run(slots, np.zeros([1, 2, self.input_dim], np.float32),
                  np.full(1, 2, np.int32), fresh)

    # -------------------------------------------------------------- lookup
    def __len__(self):
        return len(self._slots)

    def __contains__(self, stream_id):
        return stream_id in self._slots

    def ids(self):
        return list(self._slots)

    @property
    def free_slots(self):
        return len(self._free)

    def _slot(self, stream_id):
        try:
            return self._slots[stream_id]
        except KeyError:
            raise UnknownStreamError(
                f"no stream {stream_id!r} in the pool (it never stepped, "
                "ended, or was evicted after being idle).") from None

    def steps(self, stream_id):
        """Steps of the stream since it started or was last reset."""
        return int(self._steps[self._slot(stream_id)])

    def state(self, stream_id):
        """The stream's state: a tuple of `LSTMState(h [H], c [H])` arrays."""
        slot = self._slot(stream_id)
        return tuple(LSTMState(h[slot].numpy(), c[slot].numpy())
                     for h, c in zip(self._h, self._c))

    def level(self, stream_id):
        """The stream's last known level: `[level_dim]` float64, NaN where
        unknown (no row since it joined or was reset)."""
        return self._levels.get(self._slot(stream_id))

    def check_level(self, level):
        """A level sent in JSON -> `[level_dim]` float64 or None (unknown:
        null, not NaN); a ValueError says what is wrong."""
        return self._levels.check(level, nan_unknown=False)

    # ---------------------------------------------------------------- step
    def _bucket(self, batch):
        for size in self.buckets:
            if size >= batch:
                return size
        return batch

    def _check_ids(self, ids):
        ids = list(ids)
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"a step takes each stream once; {twice} "
                             "appear more than once (send their rows as one "
                             "multi-row input, in order).")
        new = [i for i in ids if i not in self._slots]
        if len(new) > len(self._free):
            self.evict_idle()
        if len(new) > len(self._free):
            raise PoolFullError(
                f"the pool is full: {len(self._slots)} of {self.capacity} "
                f"streams are live and {len(new)} new stream(s) asked to "
                "join; end streams (end/DELETE), wait for idle ones to be "
                "evicted, or raise the capacity.")
        return ids, new

    def _rows(self, ids, inputs):
        """Per stream `[k, D]` float32 rows, and whether the input was one
        row per stream as a `[B, D]` array."""
        if isinstance(inputs, (np.ndarray, tf.Tensor)) or (
                len(ids) and not isinstance(inputs, (list, tuple))):
            arr = np.asarray(inputs, np.float32)
            if arr.ndim == 2:
                rows, single = list(arr[:, None, :]), True
            elif arr.ndim == 3:
                rows, single = list(arr), False
            else:
                raise ValueError(
                    "inputs must be [B, D] (one row per stream), [B, T, D] "
                    "or a list of [k, D] arrays, one per stream; got shape "
                    f"{list(arr.shape)}.")
        else:
            rows, single = [np.asarray(r, np.float32) for r in inputs], False
        if len(rows) != len(ids):
            raise ValueError(f"{len(ids)} stream id(s) but inputs for "
                             f"{len(rows)}.")
        for i, r in zip(ids, rows):
            if r.ndim != 2 or r.shape[1] != self.input_dim or not len(r):
                raise ValueError(
                    f"stream {i!r}: inputs must be [k, {self.input_dim}] "
                    f"(k >= 1 rows of {self.input_dim} features); got shape "
                    f"{list(r.shape)}.")
        return rows, single

    def step(self, ids, inputs, levels=None):
        """Steps every stream of `ids` through its rows of `inputs`.

        `inputs`: `[B, D]` (one row per stream; returns `[B, O]`), or
        `[B, T, D]`, or a list of `[k_i, D]` arrays (k_i rows of stream i,
        in order; returns a list of `[k_i, O]` arrays). New ids join from
        the initial state (and an unknown level); a full pool raises
        `PoolFullError` and changes nothing. One compiled call runs every
        stream's rows. `levels` (`[B, level_dim]`, a pool that keeps
        levels): each stream's level after its rows, recorded with the new
        state (None: levels left as they were).
        """
        ids, new = self._check_ids(ids)
        rows, single = self._rows(ids, inputs)
        levels = self._levels.check_rows(levels, len(ids))
        if not ids:
            return np.zeros([0, self.output_dim], np.float32) if single \
                else []
        for stream_id in new:
            slot = self._free.pop()
            self._slots[stream_id] = slot
            self._steps[slot] = 0
            self._levels.set(slot, None)
        batch = len(ids)
        padded = self._bucket(batch)
        lengths = np.zeros(padded, np.int32)
        lengths[:batch] = [len(r) for r in rows]
        width = int(lengths.max())
        x = np.zeros([padded, width, self.input_dim], np.float32)
        for b, r in enumerate(rows):
            x[b, :len(r)] = r
        slots = np.full(padded, self.scratch, np.int32)
        slots[:batch] = [self._slots[i] for i in ids]
        fresh = np.zeros(padded, bool)
        new = set(new)
        fresh[:batch] = [i in new for i in ids]
        if width == 1:
            out = self._one_row(slots, x[:, 0], fresh).numpy()[:, None]
        else:
            out = self._run(slots, x, lengths, fresh).numpy()
        now = self.clock()
        live = slots[:batch]
        self._steps[live] += lengths[:batch]
        self._last[live] = now
        self._levels.set_rows(live, levels)
        if single:
            return out[:batch, 0]
        return [out[b, :len(r)] for b, r in enumerate(rows)]

    # ------------------------------------------------------ state changes
    def _write(self, slot, state):
        for h, c, s in zip(self._h, self._c, state):
            h.scatter_update(tf.IndexedSlices(s.h[None], [slot]))
            c.scatter_update(tf.IndexedSlices(s.c[None], [slot]))

    def check_state(self, state):
        """A state given per stream -> tuple of `LSTMState` of float32 `[H]`
        arrays; a ValueError says what is wrong."""
        expected = (f"{self.num_layers} (h, c) pair(s), one per layer, each "
                    f"h and c a vector of {self.units} finite numbers")
        if not isinstance(state, (tuple, list)) or \
                len(state) != self.num_layers:
            raise ValueError(f"a state must be {expected}.")
        out = []
        for i, layer in enumerate(state):
            if isinstance(layer, dict):
                layer = (layer.get("h"), layer.get("c"))
            if not isinstance(layer, (tuple, list)) or len(layer) != 2:
                raise ValueError(f"state layer {i} must be an (h, c) pair; "
                                 f"a state must be {expected}.")
            parts = []
            for name, v in zip("hc", layer):
                try:
                    a = np.asarray(v, np.float32)
                except (TypeError, ValueError):
                    a = np.zeros([0], np.float32)
                if a.shape != (self.units,):
                    raise ValueError(
                        f"state layer {i} {name} must be a vector of "
                        f"{self.units} numbers; got shape {list(a.shape)}.")
                if not np.isfinite(a).all():
                    raise ValueError(f"state layer {i} {name} holds NaN or "
                                     "infinity.")
                parts.append(a)
            out.append(LSTMState(*parts))
        return tuple(out)

    def reset(self, stream_id, state=None, steps=0, level=None):
        """Sets the stream's state to the initial one, or to `state` (one
        `(h [H], c [H])` per layer); its step count restarts at `steps` (0;
        a stream moved from another pool keeps its count); its level (a
        pool that keeps levels) to `level` (None: unknown, so its next row
        is a first row, as after a join). An unknown id joins (a full pool
        raises `PoolFullError`)."""
        if isinstance(steps, bool) or not isinstance(
                steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0; got {steps!r}.")
        if state is not None:
            state = self.check_state(state)
        level = self._levels.check(level)
        if stream_id not in self._slots:
            self._check_ids([stream_id])
            self._slots[stream_id] = self._free.pop()
        slot = self._slots[stream_id]
        if state is None:
            state = tuple(LSTMState(s.h[0], s.c[0])
                          for s in self.model.initial_state(1))
        self._write(slot, state)
        self._steps[slot] = steps
        self._levels.set(slot, level)
        self._last[slot] = self.clock()

    def end(self, stream_id):
        """Frees the stream's slot; returns its last state."""
        final = self.state(stream_id)
        self._free.append(self._slots.pop(stream_id))
        return final

    def evict_idle(self, now=None):
        """Frees every stream idle for longer than `idle_timeout`, calling
        `on_evict(id, state, steps)` first; returns the ids evicted."""
        if self.idle_timeout is None or not self._slots:
            return []
        now = self.clock() if now is None else now
        idle = [i for i, s in self._slots.items()
                if now - self._last[s] > self.idle_timeout]
        for stream_id in idle:
            steps = self.steps(stream_id)
            level = self.level(stream_id)
            final = self.end(stream_id)
            if self.on_evict is not None:
                self.on_evict(stream_id, final, steps,
                              *((level,) if self.level_dim else ()))
        return idle

    # ------------------------------------------------------------ snapshot
    def snapshot(self, path):
        """Writes every stream's state, step count, id (and level) to `path`
        (.npz), atomically: a temporary file in the same directory, flushed
        to disk, then renamed over `path`. A crash leaves the previous one."""
        ids = list(self._slots)
        slots = np.array([self._slots[i] for i in ids], np.int64)
        arrays = {"units": np.array(self.units),
                  "num_layers": np.array(self.num_layers),
                  "ids": np.array(ids, dtype=object).astype(str)
                  if ids else np.zeros([0], "<U1"),
                  "steps": self._steps[slots], **self._levels.snapshot(slots)}
        for i in range(self.num_layers):
            arrays[f"h_{i}"] = tf.gather(self._h[i], slots).numpy()
            arrays[f"c_{i}"] = tf.gather(self._c[i], slots).numpy()
        return snapshots.write(path, arrays)

    def restore(self, path):
        """Replaces the pool's streams with those of snapshot `path`."""
        data = snapshots.read(path, self.units, self.num_layers)
        ids = [str(i) for i in data["ids"]]
        if len(ids) > self.capacity:
            raise ValueError(
                f"snapshot {path} holds {len(ids)} streams, more than the "
                f"capacity {self.capacity}; raise the capacity.")
        self._levels.restore(data, len(ids), path)
        self._slots = {i: s for s, i in enumerate(ids)}
        self._free = list(range(self.capacity - 1, len(ids) - 1, -1))
        self._steps[:] = 0
        self._steps[:len(ids)] = data["steps"]
        self._last[:] = self.clock()
        for i in range(self.num_layers):
            for var, key in ((self._h[i], f"h_{i}"), (self._c[i], f"c_{i}")):
                full = np.zeros([self.capacity + 1, self.units], np.float32)
                full[:len(ids)] = data[key]
                var.assign(full)
        return ids
