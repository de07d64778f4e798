"""Windows mode's data: one lane per stream, every window of `seq_len`
steps from any start (pipelines.windows_dataset), and the history split of
`--validate_on=history` (tasks.history_split)."""

import numpy as np

from lstm_ctl.data import pipelines, tasks
from lstm_ctl.data.tasks import CsvTask, Series


def _series(name, values):
    x = np.asarray(values, np.float32)[:, None]
    return Series(name, x, x, np.ones(len(x), np.float32),
                  list(range(len(x))), tasks.holdout_cut(len(x)))


TASK = CsvTask(["x"], ["x"])


def test_every_window_once_per_pass_each_a_slice_of_one_stream():
    series = [_series("a", np.arange(30)), _series("b", 100 + np.arange(12))]
    arrays = tasks.stream_lanes(series)
    # Train pairs: rows [0, cut) of each stream: 26 and 10 pairs.
    assert list(arrays.lengths) == [26, 10]
    starts = pipelines.window_starts(arrays, 8)
    assert len(starts) == (26 - 8 + 1) + (10 - 8 + 1)
    ds = pipelines.windows_dataset(TASK, arrays, 8, batch_size=len(starts),
                                   seed=0)
    batch = next(iter(ds))
    x = batch["inputs"].numpy()[..., 0]
    y = batch["targets"].numpy()[..., 0]
    assert np.all(np.diff(x, axis=1) == 1)        # contiguous slices
    np.testing.assert_array_equal(y, x + 1)        # next-step targets
    assert sorted(map(tuple, x[:, [0]].astype(int).tolist())) == sorted(
        [(s,) for s in range(19)] + [(100 + s,) for s in range(3)])
    assert batch["reset_mask"].numpy()[:, 0].all()  # each from the start
    assert not batch["reset_mask"].numpy()[:, 1:].any()
    assert (batch["weights"].numpy() == 1).all()   # never the padding


def test_a_stream_shorter_than_a_window_gives_one_padded_window():
    arrays = tasks.stream_lanes([_series("a", np.arange(6))])
    assert pipelines.window_starts(arrays, 8).tolist() == [[0, 0]]
    batch = next(iter(pipelines.windows_dataset(TASK, arrays, 8, 2, 0)))
    assert batch["inputs"].shape[1] == 8
    np.testing.assert_array_equal(batch["weights"].numpy()[0],
                                  [1, 1, 1, 1, 0, 0, 0, 0])


def test_history_split_keeps_the_hold_out_and_validation_rows_from_training():
    s = _series("a", np.arange(100))
    (v,) = tasks.history_split([s])
    assert len(v.inputs) == s.cut == 90 and v.cut == 81
    arrays = tasks.stream_lanes([v])
    seen = arrays.targets[0, :arrays.lengths[0], 0]
    assert seen.max() == 80   # targets of rows 1..80 only
