"""Data as it comes: time and id columns, gaps, file sets, per-stream
hold-outs. Every reference here is built by hand in NumPy from the rows the
test writes."""

import io
import random

import numpy as np
import pytest

from lstm_ctl.data import tasks as data
from lstm_ctl.data import pipelines
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] +
                              [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def first_losses(tmp_path, name, data_config, steps=3):
    config = TrainConfig(model_dir=str(tmp_path / name),
                         model=ModelConfig(units=8), data=data_config,
                         train_steps=steps, log_every=1, hist_every=100,
                         checkpoint_every=100, lr_schedule="constant")
    return trainer.train(config, out=io.StringIO())["losses"]


def hand_norm(train_rows):
    std = train_rows.std(0)
    return train_rows.mean(0), np.where(std > 0, std, 1.0)


# ------------------------------------------------- a date column with gaps
def dated_rows(n=80, seed=0):
    """(date, temp, load) rows on irregular days; temp has gaps (None)."""
    rng = np.random.default_rng(seed)
    days = np.cumsum(rng.integers(1, 4, n))
    rows = []
    for i, d in enumerate(days):
        date = np.datetime64("2023-12-30") + np.timedelta64(int(d), "D")
        temp = None if i in (0, 1, 7, 8, 9, 40) else round(
            float(np.sin(i / 6) + 0.1 * rng.standard_normal()), 4)
        rows.append([str(date), temp, round(float(np.cos(i / 9)), 4)])
    return rows


def cells(rows):
    return [["" if v is None else v for v in r] for r in rows]


def test_date_column_gaps_and_unsorted_rows_equal_a_hand_filled_copy(
        tmp_path):
    rows = dated_rows()
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    gappy = write_csv(tmp_path / "gappy.csv", ["date", "temp", "load"],
                      cells(shuffled))
    filled, last = [], None
    first = next(r[1] for r in rows if r[1] is not None)
    for date, temp, load in rows:              # sorted by date, filled
        last = temp if temp is not None else (last if last is not None
                                              else first)
        filled.append([date, last, load])
    by_hand = write_csv(tmp_path / "filled.csv", ["date", "temp", "load"],
                        filled)
    common = dict(task="csv", seq_len=5, batch_size=2, time_column="date",
                  target_columns=("load",))
    ffill = DataConfig(csv_file=str(gappy), missing="ffill", **common)
    hand = DataConfig(csv_file=str(by_hand), **common)
    task, arrays = data.build_task(ffill, "train", str(tmp_path))
    assert task.input_columns == ["temp", "load"]      # the date is not
    for split in ("train", "eval"):
        a = data.build_task(ffill, split, str(tmp_path))[1]
        b = data.build_task(hand, split, str(tmp_path))[1]
        for k in ("inputs", "targets", "resets", "weights"):
            np.testing.assert_allclose(getattr(a, k), getattr(b, k),
                                       atol=1e-6)
    _, series = data.eval_series(ffill, str(tmp_path))
    assert series[0].times == [r[0] for r in rows]
    np.testing.assert_allclose(
        first_losses(tmp_path, "ffill", ffill),
        first_losses(tmp_path, "hand", hand), atol=1e-6)


def test_a_missing_target_has_weight_zero(tmp_path):
    rows = dated_rows(40)
    rows[12][2] = None                         # load (the target) missing
    path = write_csv(tmp_path / "d.csv", ["date", "temp", "load"],
                     cells(rows))
    config = DataConfig(task="csv", seq_len=5, batch_size=1, missing="ffill",
                        csv_file=str(path), time_column="date",
                        target_columns=("load",))
    task, arrays = data.build_task(config, "train", str(tmp_path))
    # Pair t has its target in row t + 1: pair 11 targets the missing row.
    expected = np.ones(arrays.steps)
    expected[11] = 0
    np.testing.assert_array_equal(arrays.weights[0], expected)
    assert np.isfinite(arrays.targets).all()
    # As an input, load is filled from the row before.
    np.testing.assert_array_equal(arrays.inputs[0, 12, 1],
                                  arrays.inputs[0, 11, 1])
    assert np.isfinite(task.baseline_loss(arrays))


# --------------------------------------------------------- panel data
LENGTHS = {"acme": 23, "bolt": 31, "core": 17}


def panel_rows(seed=0):
    rng = np.random.default_rng(seed)
    rows = {}
    for k, (name, n) in enumerate(LENGTHS.items()):
        years = 1990 + np.sort(rng.choice(60, n, replace=False))
        sales = np.round(10 * k + np.cumsum(rng.standard_normal(n)), 3)
        staff = np.round(rng.uniform(1, 9, n), 3)
        rows[name] = [[name, int(y), s, f] for y, s, f in
                      zip(years, sales, staff)]
    return rows


def hand_layout(rows, batch_size):
    """The per-entity train pairs concatenated by hand, with resets."""
    cuts = {e: n - max(1, n // 10) for e, n in LENGTHS.items()}
    values = {e: np.array([r[2:] for r in rows[e]], float) for e in rows}
    mean, std = hand_norm(np.concatenate([values[e][:cuts[e]]
                                          for e in sorted(rows)]))
    x, y, r, label = [], [], [], []
    for e in sorted(rows):
        v = (values[e] - mean) / std
        c = cuts[e]
        x.append(v[:c - 1])
        y.append(v[1:c, :1])
        r.append(np.arange(c - 1) == 0)
        label += [e] * (c - 1)
    steps = len(label) // batch_size
    shape = lambda a: np.concatenate(a)[:steps * batch_size].reshape(  # noqa
        (batch_size, steps) + np.concatenate(a).shape[1:])
    resets = shape(r)
    resets[:, 0] = True
    return (shape(x), shape(y), resets,
            np.array(label)[:steps * batch_size].reshape(batch_size, steps),
            {e: (values[e][cuts[e]:, 0] - mean[0]) / std[0] for e in rows})


def test_panel_entities_are_streams_with_resets_and_own_holdouts(tmp_path):
    rows = panel_rows()
    flat = [r for e in rows for r in rows[e]]
    random.Random(0).shuffle(flat)
    path = write_csv(tmp_path / "panel.csv",
                     ["company", "year", "sales", "staff"], flat)
    config = DataConfig(task="csv", seq_len=4, batch_size=3,
                        csv_file=str(path), id_column="company",
                        time_column="year", target_columns=("sales",))
    task, arrays = data.build_task(config, "train", str(tmp_path))
    assert task.input_columns == ["sales", "staff"]
    x, y, resets, label, held_out = hand_layout(rows, 3)
    np.testing.assert_allclose(arrays.inputs, x, atol=1e-6)
    np.testing.assert_allclose(arrays.targets, y, atol=1e-6)
    np.testing.assert_array_equal(arrays.resets, resets)
    np.testing.assert_array_equal(arrays.weights, 1.0)
    # The batches' reset_mask is True exactly where an entity (or a lane)
    # begins, and wherever a lane moves from one entity to the next.
    batches = list(pipelines.stream_dataset(task, arrays, 4, repeat=False)
                   .as_numpy_iterator())
    mask = np.concatenate([b["reset_mask"] for b in batches], axis=1)
    np.testing.assert_array_equal(mask, resets[:, :mask.shape[1]])
    changes = label[:, 1:] != label[:, :-1]
    assert changes.sum() == 1 and arrays.resets[:, 1:][changes].all()
    # Hold-out: the last 10% (at least one row) of each entity.
    _, ev = data.build_task(config, "eval", str(tmp_path))
    got = np.sort(ev.targets[ev.weights > 0][:, 0])
    np.testing.assert_allclose(
        got, np.sort(np.concatenate(list(held_out.values()))), atol=1e-6)
    _, series = data.eval_series(config, str(tmp_path))
    assert [(s.name, len(s.times), s.cut) for s in series] == [
        ("acme", 23, 21), ("bolt", 31, 28), ("core", 17, 16)]
    # Training on the panel file = training on one file per entity.
    folder = tmp_path / "by_entity"
    folder.mkdir()
    for e in rows:
        write_csv(folder / f"{e}.csv", ["year", "sales", "staff"],
                  [r[1:] for r in sorted(rows[e], key=lambda r: -r[1])])
    split = DataConfig(task="csv", seq_len=4, batch_size=3,
                       csv_file=str(folder), time_column="year",
                       target_columns=("sales",))
    np.testing.assert_allclose(first_losses(tmp_path, "panel", config),
                               first_losses(tmp_path, "split", split),
                               atol=1e-6)


# --------------------------------------------------------- text file sets
def test_a_directory_of_text_files_is_one_stream_per_file(tmp_path):
    texts = {"a.txt": "hello world " * 5, "b.txt": "abcd" * 10,
             "c.txt": "xyz" * 10 + "Q"}       # Q only in c's hold-out
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in texts.items():
        (folder / name).write_text(text)
    (folder / ".hidden").write_text("ignored")
    for spec in (str(folder), str(folder / "*.txt")):
        config = DataConfig(task="text", seq_len=3, batch_size=2,
                            text_file=spec)
        task, arrays = data.build_task(config, "train", str(tmp_path))
        vocab = sorted(set("".join(texts.values())))
        assert task.vocab == vocab
        ids, resets = [], []
        for text in texts.values():
            cut = len(text) - max(1, len(text) // 10)
            ids += [vocab.index(ch) for ch in text[:cut - 1]]
            resets += [True] + [False] * (cut - 2)
        steps = len(ids) // 2
        np.testing.assert_array_equal(
            arrays.inputs, np.reshape(ids[:2 * steps], (2, steps)))
        expected = np.reshape(resets[:2 * steps], (2, steps))
        expected[:, 0] = True
        np.testing.assert_array_equal(arrays.resets, expected)
        _, ev = data.build_task(config, "eval", str(tmp_path))
        tails = "".join(t[len(t) - max(1, len(t) // 10):]
                        for t in texts.values())
        assert sorted(ev.targets[ev.weights > 0]) == sorted(
            vocab.index(ch) for ch in tails)


# ------------------------------------------------------ small hold-outs
def test_a_short_holdout_gets_fewer_lanes_and_a_padded_last_chunk(
        tmp_path):
    path = write_csv(tmp_path / "q.csv", ["v"],
                     [[round(float(np.sin(i / 3)), 4)] for i in range(150)])
    config = DataConfig(task="csv", seq_len=10, batch_size=4,
                        csv_file=str(path), target_columns=("v",))
    _, arrays = data.build_task(config, "eval", str(tmp_path))
    # 15 held-out rows: one lane of 2 chunks, the last 5 steps padding.
    assert (arrays.lanes, arrays.steps) == (1, 20)
    np.testing.assert_array_equal(arrays.weights[0], [1] * 15 + [0] * 5)
    train = data.build_task(config, "train", str(tmp_path))[1]
    mean, std = hand_norm(np.sin(np.arange(135) / 3).round(4)[:, None])
    expected = (np.sin(np.arange(135, 150) / 3).round(4) - mean) / std
    np.testing.assert_allclose(arrays.targets[0, :15, 0], expected,
                               atol=1e-5)
    assert train.lanes == 4


# ----------------------------------------------------------- bad input
def panel_file(tmp_path, extra=(), header=("company", "year", "sales")):
    rows = [["acme", 1990 + i, i] for i in range(5)] + \
        [["bolt", 1990 + i, 2 * i] for i in range(4)] + list(extra)
    return write_csv(tmp_path / "p.csv", header, rows)


@pytest.mark.parametrize("extra, kwargs, message", [
    ((), dict(input_columns=("pressure",)),
     r"has no column\(s\) \['pressure'\] \(--input_columns\); its columns "
     r"are \['company', 'year', 'sales'\]"),
    ((), dict(time_column="when"), r"no column\(s\) \['when'\] "
                                   r"\(--time_column\)"),
    ((), dict(id_column=None),
     r"p.csv: line 2, column 'company': 'acme' is not a number; a column of "
     r"names or labels can be the --id_column, a date the --time_column, or "
     r"leave it out with --input_columns"),
    ([["acme", 1992, 7]], {},
     r"p.csv: line 11 repeats the time '1992' of .*p.csv line 4 for "
     r"--id_column 'company' value 'acme'"),
    ([["acme", "2024-13-01", 7]], {},
     r"line 11, column 'year': '2024-13-01' is not a number \(the earlier "
     r"cells of the --time_column are numbers\)"),
    ([["solo", 1990, 1]], {}, r"--id_column 'company' value 'solo' has 1 "
                              r"row\(s\); every stream needs at least 3"),
    ([["acme", 2000, ""]], {}, r"line 11, column 'sales': missing value "
                               r"\(''\); pass --missing=ffill"),
    ([["acme", "", 3]], {}, r"line 11: the --time_column 'year' is empty"),
])
def test_bad_tables_name_the_row_column_and_flag(tmp_path, extra, kwargs,
                                                 message):
    path = panel_file(tmp_path, extra)
    config = DataConfig(**{**dict(
        task="csv", seq_len=2, batch_size=1, csv_file=str(path),
        target_columns=("sales",), id_column="company",
        time_column="year"), **kwargs})
    with pytest.raises(ValueError, match=message):
        data.build_task(config, "train", str(tmp_path))


def test_bad_file_sets(tmp_path):
    def build(spec, **kw):
        config = DataConfig(task="csv", seq_len=2, batch_size=1,
                            csv_file=str(spec), target_columns=("a",), **kw)
        return data.build_task(config, "train", str(tmp_path))

    write_csv(tmp_path / "x1.csv", ["a", "b"], [[1, 2]] * 4)
    write_csv(tmp_path / "x2.csv", ["a", "c"], [[1, 2]] * 4)
    with pytest.raises(ValueError, match=r"x2.csv' has the header \['a', "
                                         r"'c'\], '.*x1.csv' has \['a', 'b'\];"
                                         r" all files need the same header"):
        build(tmp_path / "x*.csv")
    with pytest.raises(ValueError, match=r"--csv_file '.*/nothing\*.csv' "
                                         r"matches no file"):
        build(tmp_path / "nothing*.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is a directory without files"):
        build(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build(tmp_path / "absent.csv")
    write_csv(tmp_path / "t.csv", ["t", "a"],
              [["2024-01-30", 1], ["2024-01-31", 2], ["2024-01-32", 3]])
    with pytest.raises(ValueError, match=r"t.csv: line 4, column 't': "
                                         r"'2024-01-32' is not an ISO date or "
                                         r"datetime .* or a number"):
        build(tmp_path / "t.csv", time_column="t")
    write_csv(tmp_path / "g.csv", ["a", "b"], [[1, ""], [2, ""], [3, ""]])
    with pytest.raises(ValueError, match=r"column 'b' has no value at all in "
                                         r"stream 'g.csv'"):
        build(tmp_path / "g.csv", missing="ffill")
    # drop: rows with a missing cell go; too few are left here.
    with pytest.raises(ValueError, match="no row is left after "
                                         "--missing=drop"):
        build(tmp_path / "g.csv", missing="drop")


@pytest.mark.parametrize("kwargs, message", [
    (dict(time_column="t", input_columns=("t", "a")),
     "input_columns must not hold the time_column 't'"),
    (dict(id_column="k", target_columns=("k",)),
     "target_columns must not hold the id_column 'k'"),
    (dict(time_column="t", id_column="t"), "time_column and --id_column must "
                                           "differ"),
    (dict(input_columns=("a", "a")), r"input_columns names \['a'\] more "
                                     "than once"),
    (dict(missing="zero"), "missing must be one of"),
    (dict(task="text", text_file="x", id_column="k"),
     "id_column is for --task=csv"),
])
def test_config_checks_the_column_settings(kwargs, message):
    from lstm_ctl import config as config_lib
    data_config = DataConfig(**{**dict(task="csv", csv_file="d.csv",
                                       target_columns=("b",)), **kwargs})
    with pytest.raises(ValueError, match=message):
        config_lib.validate(TrainConfig(data=data_config))


def test_eval_series_and_denormalize_give_back_the_data(tmp_path):
    rows = dated_rows(30)
    rows[5][2] = None
    path = write_csv(tmp_path / "d.csv", ["date", "temp", "load"],
                     cells(rows))
    config = DataConfig(task="csv", seq_len=2, batch_size=1, missing="ffill",
                        csv_file=str(path), time_column="date",
                        input_columns=("temp",), target_columns=("load",))
    task, (s,) = data.eval_series(config, str(tmp_path))
    assert (task.input_columns, task.target_columns) == (["temp"], ["load"])
    assert (s.name, s.cut, s.times[0]) == ("d.csv", 27, rows[0][0])
    np.testing.assert_array_equal(s.weights, [i != 5 for i in range(30)])
    keep = s.weights > 0
    np.testing.assert_allclose(
        data.denormalize(task, s.targets)[keep, 0],
        [r[2] for r in rows if r[2] is not None], atol=1e-5)
    task, signals = data.eval_series(
        TrainConfig(data=DataConfig(batch_size=3)), str(tmp_path))
    assert [s.name for s in signals] == ["0", "1", "2"]
    assert all(s.cut == len(s.times) // 2 for s in signals)
    np.testing.assert_array_equal(data.denormalize(task, signals[0].targets),
                                  signals[0].targets)


def test_drop_equals_a_copy_without_the_gappy_rows(tmp_path):
    rows = dated_rows(50)
    gappy = write_csv(tmp_path / "g.csv", ["date", "temp", "load"],
                      cells(rows[::-1]))
    kept = write_csv(tmp_path / "k.csv", ["date", "temp", "load"],
                     [r for r in rows if r[1] is not None])
    common = dict(task="csv", seq_len=5, batch_size=2, time_column="date",
                  target_columns=("load",))
    a = data.build_task(DataConfig(csv_file=str(gappy), missing="drop",
                                   **common), "train", str(tmp_path))[1]
    b = data.build_task(DataConfig(csv_file=str(kept), **common), "train",
                        str(tmp_path))[1]
    assert a.inputs.shape == b.inputs.shape
    np.testing.assert_allclose(a.inputs, b.inputs, atol=1e-6)


def test_a_text_column_with_gaps_is_named_before_any_gap(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["year", "v", "notes"],
                     [[2000, 1, ""], [2001, "", ""], [2002, 3, "restated"],
                      [2003, 4, ""]])
    config = DataConfig(task="csv", seq_len=2, batch_size=1,
                        csv_file=str(path), time_column="year",
                        target_columns=("v",))
    with pytest.raises(ValueError, match=r"line 4, column 'notes': "
                                         r"'restated' is not a number; a "
                                         r"column of names"):
        data.build_task(config, "train", str(tmp_path))


def test_files_of_the_same_name_in_two_folders_are_two_streams(tmp_path):
    for folder, offset in (("x", 0), ("y", 100)):
        (tmp_path / folder).mkdir()
        write_csv(tmp_path / folder / "s.csv", ["v"],
                  [[offset + i] for i in range(10)])
    config = DataConfig(task="csv", seq_len=2, batch_size=1,
                        csv_file=str(tmp_path / "*" / "s.csv"),
                        target_columns=("v",))
    _, series = data.eval_series(config, str(tmp_path))
    assert [(s.name, len(s.times)) for s in series] == [("s.csv", 10)] * 2
