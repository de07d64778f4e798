"""tf.data pipelines over the lanes of `data.StreamArrays`, one per state
policy: carry mode reads every lane's chunk k as batch k (row i of batch
k+1 continues row i of batch k); reset mode shuffles chunks; stored mode
and burn-in add each chunk's index and its stream's previous steps.
"""

import numpy as np
import tensorflow as tf


def finish(ds, autotune=False):
    """`ds` as every pipeline ends: without tf.data's autotuning unless
    `autotune`. Nothing here has a tunable parameter (no AUTOTUNE
    parallelism or buffer), and the autotuning thread that an iterator
    starts can hold the iterator's deletion for up to a minute: woken by
    the cancellation before the cancellation counts as done, it sleeps out
    its period again (seen in the tests as processes idle for 60 s inside
    `RootDataset::Iterator::~Iterator`). An iterator checkpointed with
    autotuning restores only into a pipeline with it: runs whose
    checkpoints were written that way keep it (`autotune=True`,
    train/trainer.py)."""
    if autotune:
        return ds
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def features_of(task):
    """Inputs as the model takes them (`task.model_inputs`: text ids
    one-hot, else as they are)."""
    return task.model_inputs


def lane_tensors(arrays):
    """The lanes' arrays as constants, read by every pipeline's map."""
    return {k: tf.constant(getattr(arrays, k))
            for k in ("inputs", "targets", "resets", "weights")}


def stream_dataset(task, arrays, seq_len, repeat=True, autotune=False):
    """Carry-mode batches: batch k is every lane's chunk k, `[B, T, ...]`.

    The first batch of each pass starts every lane's first stream, so a
    repeat also resets the state.
    """
    chunks = arrays.steps // seq_len
    tensors = lane_tensors(arrays)
    features = features_of(task)

    def chunk(k):
        k = tf.cast(k, tf.int32)
        sl = lambda t: t[:, k * seq_len:(k + 1) * seq_len]  # noqa: E731
        return {"inputs": features(sl(tensors["inputs"])),
                "targets": sl(tensors["targets"]),
                "reset_mask": sl(tensors["resets"]),
                "weights": sl(tensors["weights"])}

    ds = tf.data.Dataset.range(chunks)
    if repeat:
        ds = ds.repeat()
    return finish(ds.map(chunk).prefetch(2), autotune)


def shuffled_dataset(task, arrays, seq_len, seed, autotune=False):
    """Reset-mode batches: chunks from any lane and place, shuffled."""
    chunks = arrays.steps // seq_len
    lanes = arrays.lanes
    tensors = lane_tensors(arrays)
    features = features_of(task)
    first = tf.one_hot(0, seq_len, on_value=True, off_value=False)

    def example(i):
        i = tf.cast(i, tf.int32)
        lane, k = i // chunks, i % chunks
        sl = lambda t: t[lane, k * seq_len:(k + 1) * seq_len]  # noqa: E731
        return {"inputs": features(sl(tensors["inputs"])),
                "targets": sl(tensors["targets"]),
                "reset_mask": tf.logical_or(sl(tensors["resets"]), first),
                "weights": sl(tensors["weights"])}

    return finish(
        tf.data.Dataset.range(lanes * chunks)
        .shuffle(lanes * chunks, seed=seed, reshuffle_each_iteration=True)
        .repeat().map(example).batch(lanes, drop_remainder=True)
        .prefetch(2), autotune)


def window_starts(arrays, seq_len):
    """Windows mode: `(lane, start)` of every window of `seq_len` steps that
    lies within a lane's real steps (a lane shorter than that: one window
    from its start, its padding weighted 0), `[W, 2]` int32."""
    lengths = (arrays.lengths if arrays.lengths is not None
               else np.full(arrays.lanes, arrays.steps))
    return np.array([(lane, start) for lane, n in enumerate(lengths)
                     for start in range(max(1, int(n) - seq_len + 1))],
                    np.int32).reshape(-1, 2)


def windows_dataset(task, arrays, seq_len, batch_size, seed,
                    autotune=False):
    """Windows-mode batches: `batch_size` windows of `seq_len` steps, drawn
    shuffled from every start in every lane (stride 1), each from the
    initial state. A lane's resets inside a window still restart it."""
    starts = window_starts(arrays, seq_len)
    pad = max(0, seq_len - arrays.steps)  # a lane shorter than a window
    tensors = {k: tf.constant(np.pad(
        v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2)))
        for k, v in ((k, getattr(arrays, k)) for k in
                     ("inputs", "targets", "resets", "weights"))}
    starts_t = tf.constant(starts)
    features = features_of(task)
    first = tf.one_hot(0, seq_len, on_value=True, off_value=False)

    def example(i):
        lane, start = starts_t[i][0], starts_t[i][1]
        sl = lambda t: t[lane, start:start + seq_len]  # noqa: E731
        return {"inputs": features(sl(tensors["inputs"])),
                "targets": sl(tensors["targets"]),
                "reset_mask": tf.logical_or(sl(tensors["resets"]), first),
                "weights": sl(tensors["weights"])}

    return finish(
        tf.data.Dataset.range(len(starts))
        .shuffle(len(starts), seed=seed, reshuffle_each_iteration=True)
        .repeat().map(example).batch(batch_size, drop_remainder=True)
        .prefetch(2), autotune)


def train_dataset(task, arrays, seq_len, state_mode, seed, batch_size=None,
                  autotune=False):
    if state_mode == "carry":
        return stream_dataset(task, arrays, seq_len, autotune=autotune)
    if state_mode == "windows":
        return windows_dataset(task, arrays, seq_len, batch_size, seed,
                               autotune)
    return shuffled_dataset(task, arrays, seq_len, seed, autotune)


def window_dataset(task, arrays, seq_len, burn_in, seed, shuffle=True,
                   autotune=False):
    """Stored-state and burn-in batches: shuffled chunks, each with its
    index and its stream's `burn_in` steps before it.

    Example `i` is chunk `k = i % chunks` of lane `i // chunks`, the span
    `[kT, (k+1)T)` with the lane's own `reset_mask`, plus:
    - `chunk` `[B]` int32: `i`; chunk `i - 1` is the one before it in its
      lane (its predecessor, unless `stream_start`);
    - `stream_start` `[B]` bool: the chunk's stream starts inside its
      window `[kT - burn_in, kT]` (or the lane does, after the window's
      start): the window then starts from the initial state;
    - with `burn_in` > 0, `burn_in_inputs` `[B, N, D]`, the steps
      `[kT - N, kT)`, and `burn_in_mask` `[B, N]`, False where a step is
      padding before the lane's start or belongs to an earlier stream (so a
      burn-in never reads the previous stream).
    `shuffle=False` visits the chunks in stream order (batch k holds every
    lane's chunk k), as carry mode does; for tests.
    """
    chunks = arrays.steps // seq_len
    lanes = arrays.lanes
    tensors = lane_tensors(arrays)
    # Where the stream of each step started: [lanes, steps] int32.
    steps = np.arange(arrays.steps, dtype=np.int32)
    stream_begin = tf.constant(np.maximum.accumulate(
        np.where(arrays.resets, steps, 0), axis=1))
    features = features_of(task)

    def example(i):
        i = tf.cast(i, tf.int32)
        lane, k = i // chunks, i % chunks
        start = k * seq_len
        sl = lambda t: t[lane, start:start + seq_len]  # noqa: E731
        begin = stream_begin[lane, start]  # of the chunk's first step
        first = start - burn_in  # the window's start
        out = {"inputs": features(sl(tensors["inputs"])),
               "targets": sl(tensors["targets"]),
               "reset_mask": sl(tensors["resets"]),
               "weights": sl(tensors["weights"]),
               "chunk": i, "stream_start": first <= begin}
        if burn_in:
            positions = tf.range(first, start)
            out["burn_in_inputs"] = features(
                tf.gather(tensors["inputs"][lane], tf.maximum(positions, 0)))
            out["burn_in_mask"] = positions >= begin
        return out

    if shuffle:
        ds = tf.data.Dataset.range(lanes * chunks).shuffle(
            lanes * chunks, seed=seed, reshuffle_each_iteration=True)
    else:  # batch k: every lane's chunk k
        ds = tf.data.Dataset.range(chunks * lanes).map(
            lambda j: (j % lanes) * chunks + j // lanes)
    return finish(ds.repeat().map(example).batch(lanes, drop_remainder=True)
                  .prefetch(2), autotune)
