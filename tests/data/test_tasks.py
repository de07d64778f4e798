"""Tasks and stream batching."""

import json

import numpy as np
import pytest

from lstm_ctl.data import tasks as data
from lstm_ctl.data import pipelines
from lstm_ctl.config import DataConfig


def test_lanes_pack_whole_streams_and_mark_where_they_start():
    streams = iter([np.arange(5), np.arange(100, 103), np.arange(200, 210)])
    values, starts = data.lanes_from_streams(streams, lanes=2, steps=6)
    np.testing.assert_array_equal(values[0], [0, 1, 2, 3, 4, 100])
    np.testing.assert_array_equal(starts[0], [1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(values[1], [200, 201, 202, 203, 204, 205])
    np.testing.assert_array_equal(starts[1], [1, 0, 0, 0, 0, 0])
    arrays = data.next_step_arrays(values, starts)
    # The target of the last step of stream 0 would be stream 1: weight 0.
    np.testing.assert_array_equal(arrays.weights[0], [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(arrays.targets[0][:4], [1, 2, 3, 4])
    np.testing.assert_array_equal(arrays.resets[0], [1, 0, 0, 0, 0])


def test_pipelines_leave_autotuning_off_unless_asked():
    # tf.data's autotuning thread can hold an iterator's deletion for up to
    # a minute; only a run checkpointed with it keeps it (pipelines.finish).
    config = DataConfig(task="sine", seq_len=5, batch_size=2, seed=3)
    task, arrays = data.build_task(config, "eval")
    for mode in ("carry", "reset", "windows"):
        for autotune in (False, True):
            ds = pipelines.train_dataset(task, arrays, 5, mode, 0, 2,
                                         autotune=autotune)
            enabled = ds.options().autotune.enabled is not False
            assert enabled is autotune, (mode, autotune)
    assert pipelines.stream_dataset(task, arrays, 5).options() \
        .autotune.enabled is False
    ds = pipelines.window_dataset(task, arrays, 5, 2, 0)
    assert ds.options().autotune.enabled is False


def test_carry_batches_continue_each_row_of_the_previous_batch():
    config = DataConfig(task="sine", seq_len=7, batch_size=4, seed=3)
    task, arrays = data.build_task(config, "eval")
    batches = list(pipelines.stream_dataset(task, arrays, 7, repeat=False)
                   .take(5).as_numpy_iterator())
    for k in range(4):
        for i in range(4):
            # Row i of batch k+1 starts right after row i of batch k ends.
            np.testing.assert_array_equal(
                batches[k + 1]["inputs"][i, 0], arrays.inputs[i, 7 * (k + 1)])
            np.testing.assert_array_equal(
                batches[k]["targets"][i, -1], arrays.inputs[i, 7 * (k + 1)])
    joined = np.concatenate([b["inputs"] for b in batches], axis=1)
    np.testing.assert_array_equal(joined, arrays.inputs[:, :35])
    resets = np.concatenate([b["reset_mask"] for b in batches], axis=1)
    np.testing.assert_array_equal(resets, arrays.resets[:, :35])
    assert resets[:, 0].all()


def test_sine_streams_are_deterministic_and_change_within_lanes():
    config = DataConfig(task="sine", seq_len=10, batch_size=3, seed=5)
    _, a = data.build_task(config, "train")
    _, b = data.build_task(config, "train")
    np.testing.assert_array_equal(a.inputs, b.inputs)
    _, other = data.build_task(DataConfig(task="sine", seq_len=10,
                                          batch_size=3, seed=6), "train")
    assert not np.array_equal(a.inputs, other.inputs)
    # Lanes hold many streams, each much longer than a chunk.
    starts = np.flatnonzero(a.resets[0])
    assert len(starts) > 10 and np.diff(starts).min() >= 400
    # Targets are the next input inside a stream.
    inside = a.weights[0] == 1
    np.testing.assert_array_equal(a.targets[0, :-1][inside[:-1]],
                                  a.inputs[0, 1:][inside[:-1]])


def test_reset_batches_are_shuffled_chunks_that_start_fresh():
    config = DataConfig(task="sine", seq_len=5, batch_size=3, seed=1)
    task, arrays = data.build_task(config, "eval")
    batch = next(iter(pipelines.shuffled_dataset(task, arrays, 5, seed=0)))
    assert batch["inputs"].shape == (3, 5, 1)
    assert np.asarray(batch["reset_mask"])[:, 0].all()
    chunks = arrays.inputs[:, :arrays.steps // 5 * 5].reshape(3, -1, 5, 1)
    found = []
    for row in np.asarray(batch["inputs"]):
        where = np.argwhere((chunks == row).all(axis=(2, 3)))
        assert len(where) == 1
        found.append(tuple(where[0]))
    assert found != [(0, 0), (1, 0), (2, 0)]


def test_text_task_vocab_and_unigram_baseline(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcab" * 200, encoding="utf-8")
    config = DataConfig(task="text", seq_len=4, batch_size=2,
                        text_file=str(path))
    task, arrays = data.build_task(config, "train", str(tmp_path))
    assert task.vocab == ["a", "b", "c"]
    task.save(str(tmp_path))
    assert (tmp_path / data.VOCAB_FILE).exists()
    # The saved vocabulary is used again (for evaluation) as it is.
    (tmp_path / data.VOCAB_FILE).write_text('["a", "b", "c", "z"]')
    assert data.build_task(config, "eval", str(tmp_path))[0].vocab[-1] == "z"
    # Frequencies 2/5, 2/5, 1/5 (+1 smoothing): the unigram cross-entropy.
    baseline = task.baseline_loss(arrays)
    p = np.array([2, 2, 1]) / 5
    assert baseline == pytest.approx(-(p * np.log(p)).sum(), rel=0.02)
    batch = next(iter(pipelines.stream_dataset(task, arrays, 4)))
    assert batch["inputs"].shape == (2, 4, 3)
    np.testing.assert_array_equal(np.asarray(batch["inputs"]).sum(-1), 1.0)


def test_csv_task_normalises_and_forecasts_target_columns(tmp_path):
    path = tmp_path / "d.csv"
    t = np.arange(300)
    rows = ["a,b,c"] + [f"{np.sin(i / 5):.4f},{i % 7},{np.cos(i / 9):.4f}"
                        for i in t]
    path.write_text("\n".join(rows) + "\n")
    config = DataConfig(task="csv", seq_len=5, batch_size=2,
                        csv_file=str(path), target_columns=("c", "a"))
    task, arrays = data.build_task(config, "train", str(tmp_path))
    assert (task.input_dim, task.output_dim) == (3, 2)
    assert arrays.inputs.shape[-1] == 3 and arrays.targets.shape[-1] == 2
    flat = arrays.inputs.reshape(-1, 3)
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=0.05)
    # Target (c, a) at t is the input's (c, a) at t+1.
    np.testing.assert_array_equal(arrays.targets[0, :-1],
                                  arrays.inputs[0, 1:][:, [2, 0]])
    task.save(str(tmp_path))
    saved = json.loads((tmp_path / data.NORM_FILE).read_text())
    assert saved["columns"] == ["a", "b", "c"]
    np.testing.assert_allclose(saved["mean"], task.norm["mean"])


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n3,x\n", r"line 3, column 'b': 'x' is not a number"),
    ("a,b\n1,2\n3,inf\n", r"line 3, column 'b': 'inf' is not finite"),
    ("a,b\n1,2\n3,nan\n", r"line 3, column 'b': missing value \('nan'\); "
                          r"pass --missing=ffill .* or --missing=drop"),
    ("a,z\n1,2\n", r"has no column\(s\) \['b'\]"),
    ("", "is empty"),
])
def test_csv_errors_name_line_and_column(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    config = DataConfig(task="csv", seq_len=2, batch_size=1,
                        csv_file=str(path), target_columns=("b",))
    with pytest.raises(ValueError, match=message):
        data.build_task(config, "train", str(tmp_path))


def test_text_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\nfine\n\xff\xfe")
    config = DataConfig(task="text", seq_len=2, batch_size=1,
                        text_file=str(bad))
    with pytest.raises(ValueError, match=r"not UTF-8: invalid byte at offset "
                                         r"8 \(line 3\)"):
        data.build_task(config, "train", str(tmp_path))
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 3)
    config = DataConfig(task="text", seq_len=2, batch_size=20,
                        text_file=str(short))
    with pytest.raises(ValueError, match=r"too few for 20 parallel streams"):
        data.build_task(config, "train", str(tmp_path))
    config = DataConfig(task="text", seq_len=50, batch_size=1,
                        text_file=str(short))
    with pytest.raises(ValueError, match=r"fewer than one chunk of "
                                         r"--seq_len=50"):
        data.build_task(config, "train", str(tmp_path))


@pytest.mark.parametrize("task, make, message", [
    ("text", None, r"--text_file '.*missing.txt' does not exist"),
    ("text", b"", r"--text_file '.*' is empty"),
    ("csv", None, r"--csv_file '.*missing.csv' does not exist"),
    ("csv", b"a,b\n1,2\n3\n", r"line 3 has 1 cells, the header has 2"),
])
def test_missing_empty_and_ragged_files(tmp_path, task, make, message):
    path = tmp_path / f"missing.{'txt' if task == 'text' else 'csv'}"
    if make is not None:
        path = tmp_path / f"given.{task}"
        path.write_bytes(make)
    kwargs = ({"text_file": str(path)} if task == "text" else
              {"csv_file": str(path), "target_columns": ("b",)})
    config = DataConfig(task=task, seq_len=2, batch_size=1, **kwargs)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        data.build_task(config, "train", str(tmp_path))
