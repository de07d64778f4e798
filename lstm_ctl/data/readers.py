"""Reading and validating user data: text and CSV files as they come.

`--text_file` and `--csv_file` name a file, a directory (its files, sorted;
hidden files skipped) or a glob. Text: each file is one stream. CSV: the
files are one table (same header), read by pandas as spreadsheets and
agencies write them (UTF-8 with or without a byte order mark; `,`, `;` or
tab, sniffed or `--csv_delimiter`; quoting; blank lines at the end); a
pandas DataFrame can stand in for the files. The streams are the
`--id_column`'s entities, or the files when there is no id column; rows
are ordered by the `--time_column` (numbers, ISO dates and datetimes,
quarters, months, dates like Jan-1-1995) within each stream. Missing cells
(empty, NA, NaN, null) follow `--missing`. Every problem is a `ValueError`
(or `FileNotFoundError`) whose one-line message names the file, line,
column and the flag that fixes it. No TensorFlow here (train.py checks
data before importing it); nothing here normalises or lays out data (see
tasks.py).
"""

import dataclasses
import json
import os
from typing import List

import numpy as np
import pandas as pd

from lstm_ctl.data.csv_files import (
    DATAFRAME, MISSING_FIX, _missing, _numbers, _text, expand_paths,
    frame_source, read_csv_files, say, stream_name)
from lstm_ctl.data.times import _time_keys

MIN_STREAM_ROWS = 3     # 2 to train on (one next-step pair), 1 held out
HOLDOUT_FRACTION = 0.1  # text and csv: the tail of each stream is eval


@dataclasses.dataclass
class CsvStream:
    """One entity (or file) of a CSV table, rows in time order."""
    name: str
    inputs: np.ndarray      # [L, D] float64, gaps filled (--missing=ffill)
    targets: np.ndarray     # [L, O] float64, NaN where the cell is missing
    times: list             # [L] time cells as written, or 0..L-1


@dataclasses.dataclass
class CsvTable:
    input_columns: List[str]
    target_columns: List[str]
    streams: List[CsvStream]
    notes: List[str] = dataclasses.field(default_factory=list)  # drops


def holdout_cut(rows):
    """Rows [0, cut) train, [cut, rows) are held out: the last 10%, at
    least one row."""
    return rows - max(1, int(rows * HOLDOUT_FRACTION))


def read_json(path):
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


# ----------------------------------------------------------------- files
def read_text(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"--text_file {path!r} is not UTF-8: invalid byte "
                         f"at offset {e.start} (line {line}).") from None
    if not text:
        raise ValueError(f"--text_file {path!r} is empty.")
    if len(text) < MIN_STREAM_ROWS:
        raise ValueError(f"--text_file {path!r} has {len(text)} characters; "
                         f"each file needs at least {MIN_STREAM_ROWS} (2 to "
                         "train on, 1 held out).")
    return text


def read_texts(spec):
    """`[(name, text)]`, one per file of `--text_file`."""
    return [(stream_name(p), read_text(p))
            for p in expand_paths(spec, "--text_file")]


def read_text_ids(spec, vocab_path):
    """`(vocab, [(name, ids [L] int32)])`: the characters of every file of
    `--text_file`; the vocabulary is the one saved at `vocab_path`, or
    every character of every file."""
    texts = read_texts(spec)
    if os.path.exists(vocab_path):
        vocab = read_json(vocab_path)
    else:
        vocab = sorted(set().union(*(set(t) for _, t in texts)))
    index = {ch: i for i, ch in enumerate(vocab)}
    files = []
    for name, text in texts:
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"--text_file {name!r} has characters that are "
                             f"not in {vocab_path}: {unknown[:10]}")
        files.append((name, np.array([index[ch] for ch in text], np.int32)))
    return vocab, files


def _check_columns(header, config, label):
    def known(names, flag):
        unknown = [c for c in names if c not in header]
        if unknown:
            raise ValueError(f"{label} has no column(s) {unknown} ({flag}); "
                             f"its columns are {header}.")

    known(config.target_columns, "--target_columns")
    known(config.input_columns, "--input_columns")
    for flag, name in (("--time_column", config.time_column),
                       ("--id_column", config.id_column)):
        if name:
            known([name], flag)
    keys = {config.time_column, config.id_column} - {None}
    inputs = list(config.input_columns) or [c for c in header
                                            if c not in keys]
    if not inputs:
        raise ValueError(f"{label} has no column left to use as an input "
                         f"(its columns are {header}).")
    return inputs


def read_csv_table(config, frame=None):
    """The CSV streams of a DataConfig (`task="csv"`), as a `CsvTable`:
    read from `config.csv_file`, or from `frame` (a pandas DataFrame).

    Input columns: `config.input_columns`, or every column other than the
    time and id columns. Rows with missing cells: an error, filled, or
    dropped (`config.missing`); a stream whose target is empty in every
    row, or (drop) that is left with too few rows, is dropped with a line.
    """
    if frame is not None:
        if config.csv_file:
            raise ValueError("pass the data as csv_file or as a DataFrame, "
                             f"not both (csv_file={config.csv_file!r}).")
        return table_from_sources([frame_source(frame)], config, DATAFRAME)
    sources = read_csv_files(config.csv_file,
                             getattr(config, "csv_delimiter", None))
    return table_from_sources(sources, config,
                              f"--csv_file {config.csv_file!r}")


def table_from_sources(sources, config, label):
    """The checks and the streams of `read_csv_table`, on tables read."""
    header = list(sources[0].frame.columns)
    inputs = _check_columns(header, config, label)
    targets = list(config.target_columns)
    used = list(dict.fromkeys(inputs + targets))
    table = pd.concat([s.frame for s in sources], ignore_index=True)
    n = len(table)
    if not n:
        raise ValueError(f"{label} has a header but no rows.")
    owner = np.concatenate([np.full(len(s.frame), k)
                            for k, s in enumerate(sources)])
    row = np.concatenate([np.arange(len(s.frame)) for s in sources])

    def where(i):
        return sources[owner[i]].where(row[i])

    drop = config.missing == "drop"
    # Every check runs on every row; as when reading row by row, the
    # problem in the earliest row is reported (key, then number, then
    # time), and a missing cell only once nothing else is wrong.
    errors = []
    key_columns = [k for k in (config.time_column, config.id_column) if k]
    key_missing = np.zeros((n, len(key_columns)), bool)
    for j, k in enumerate(key_columns):
        key_missing[:, j] = _missing(table[k])
    live = ~key_missing.any(1)
    if not drop and not live.all():
        i = int(np.argmax(~live))
        k = key_columns[int(np.argmax(key_missing[i]))]
        errors.append((i, 0, f"{where(i)}: the {_flag_of(config, k)} {k!r} "
                             "is empty; every row needs one (or pass "
                             "--missing=drop to drop such rows)."))
        live[:] = True
    decimal = np.concatenate([np.full(len(s.frame), s.decimal_comma)
                              for s in sources])
    values = np.empty((n, len(used)))
    missing = np.empty((n, len(used)), bool)
    bad = np.empty((n, len(used)), int)
    for j, c in enumerate(used):
        values[:, j], missing[:, j], bad[:, j] = _numbers(table[c], decimal)
    wrong = live & (bad > 0).any(1)
    if wrong.any():
        i = int(np.argmax(wrong))
        j = int(np.argmax(bad[i] > 0))
        cell = _text(table[used[j]]).iloc[i]
        hint = ("" if config.input_columns else
                "; a column of names or labels can be the --id_column, a "
                "date the --time_column, or leave it out with "
                "--input_columns=<the numeric columns>")
        errors.append((i, 1, f"{where(i)}, column {used[j]!r}: {cell!r} is "
                             + ("not finite." if bad[i, j] == 2 else
                                f"not a number{hint}.")))
    gappy = live & missing.any(1)
    kept = live & ~gappy if drop else live.copy()
    keys, times = np.zeros(n), list(range(n))
    if config.time_column:
        keys, times, error = _time_keys(table[config.time_column], kept,
                                        where, config.time_column)
        if error:
            errors.append((error[0], 2, error[1]))
    if errors:
        raise ValueError(min(errors)[2])
    # (Before the missing cells: neither ffill nor drop would help.)
    empty = [t for t in targets if missing[live, used.index(t)].all()]
    if empty and live.any():
        raise ValueError(f"{label}: the --target_columns {empty} are empty "
                         "in every row; name columns that have values.")
    if gappy.any() and config.missing == "error":
        i = int(np.argmax(gappy))
        j = int(np.argmax(missing[i]))
        cell = _text(table[used[j]]).iloc[i]
        raise ValueError(f"{where(i)}, column {used[j]!r}: missing value "
                         f"({cell!r}); " + MISSING_FIX)
    # Streams: entities in the order of their ids; files in path order.
    ids = (_text(table[config.id_column]).str.strip().tolist()
           if config.id_column else owner)
    groups = {}
    for i in np.flatnonzero(live):
        groups.setdefault(ids[i], []).append(i)
    # (Files: every one, also one whose every row was dropped.)
    order = sorted(groups) if config.id_column else range(len(sources))
    streams, notes = [], []
    for key in order:
        rows = np.array(groups.get(key, []), int)
        total = len(rows)
        if config.id_column:
            name = key
            what = f"--id_column {config.id_column!r} value {name!r}"
        else:
            source = sources[key]
            total = len(source.frame)
            name, what = DATAFRAME, DATAFRAME
            if source.name != DATAFRAME:
                name, what = stream_name(source.name), f"file {source.name!r}"
        empty = [t for t in targets
                 if missing[rows, used.index(t)].all()]
        if len(rows) and empty and config.missing != "error":
            notes.append(f"dropped {what} (--missing={config.missing}): its "
                         f"target column(s) {empty} are empty in every row.")
            continue
        members = rows[kept[rows]]
        if config.time_column:
            _check_duplicates(members, keys, times, where, sources, owner,
                              row, name, config)
            members = members[np.argsort(keys[members], kind="stable")]
        if len(members) < MIN_STREAM_ROWS:
            if drop:
                left = (f"{len(members)} row(s) left of {total} after "
                        "dropping rows with a missing cell"
                        if len(members) < total else f"{total} row(s)")
                notes.append(f"dropped {what} (--missing=drop): {left}; "
                             f"every stream needs at least {MIN_STREAM_ROWS}"
                             " (2 to train on, 1 held out).")
                continue
            raise ValueError(
                f"{label}: {what} has {len(members)} row(s); every stream "
                f"needs at least {MIN_STREAM_ROWS} (2 to train on, 1 held "
                "out). Remove its rows, or pass --missing=drop, which drops "
                "such streams (with a line) as well as rows with a missing "
                "cell.")
        x = values[members][:, [used.index(c) for c in inputs]]
        y = values[members][:, [used.index(c) for c in targets]]
        if config.missing == "ffill":
            x = _ffill(x, name, inputs)
        stream_times = ([times[i] for i in members] if config.time_column
                        else list(range(len(members))))
        streams.append(CsvStream(name, x, y, stream_times))
    notes = [f"{label}: {note}" for note in notes]
    for note in notes:
        say(note, once=label != DATAFRAME)
    if not streams:
        if not kept.any():
            empty = [c for j, c in enumerate(used) if missing[live, j].all()]
            detail = (f"; column(s) {empty} are empty in every row" if empty
                      else "")
            raise ValueError(f"{label}: no row is left after "
                             f"--missing=drop{detail}.")
        reasons = [n[len(label) + 2:] for n in notes]
        more = (f" ... and {len(reasons) - 5} more (lines above)"
                if len(reasons) > 5 else "")
        raise ValueError(f"{label}: no stream is left after --missing="
                         f"{config.missing}: " + " ".join(reasons[:5]) + more)
    return CsvTable(inputs, targets, streams, notes)


def _flag_of(config, column):
    return ("--time_column" if column == config.time_column
            else "--id_column")


def _check_duplicates(members, keys, times, where, sources, owner, row,
                      name, config):
    seen = {}
    for i in members:
        if keys[i] in seen:
            first = seen[keys[i]]
            who = (f" for --id_column {config.id_column!r} value {name!r}"
                   if config.id_column else "")
            raise ValueError(
                f"{where(i)} repeats the time {times[i]!r} of "
                f"{sources[owner[first]].ref(row[first])}{who}; each time "
                "may occur once per stream (--time_column "
                f"{config.time_column!r}).")
        seen[keys[i]] = i


def _ffill(x, name, columns):
    """Forward fill along time; leading gaps take the first value."""
    x = x.copy()
    for j in range(x.shape[1]):
        present = np.flatnonzero(~np.isnan(x[:, j]))
        if not len(present):
            raise ValueError(
                f"--csv_file: column {columns[j]!r} has no value at all in "
                f"stream {name!r}; --missing=ffill has nothing to fill it "
                "from (leave the column out with --input_columns, or pass "
                "--missing=drop, which drops the stream's rows with a "
                "missing cell).")
        # index of the last present value at or before each row
        last = np.maximum.accumulate(
            np.where(~np.isnan(x[:, j]), np.arange(len(x)), -1))
        x[:, j] = x[np.where(last >= 0, last, present[0]), j]
    return x


def column_statistics(table, columns):
    """Per-column mean and std over the train rows of every stream."""
    inputs = table.input_columns
    train = [(s.inputs[:holdout_cut(len(s.times))],
              s.targets[:holdout_cut(len(s.times))]) for s in table.streams]
    x = np.concatenate([t[0] for t in train])
    y = np.concatenate([t[1] for t in train])
    values = [x[:, inputs.index(c)] if c in inputs
              else y[:, table.target_columns.index(c)] for c in columns]
    values = [v[~np.isnan(v)] for v in values]
    empty = [c for c, v in zip(columns, values) if not len(v)]
    if empty:
        raise ValueError(f"--csv_file: target column(s) {empty} have no "
                         "value in the train rows of any stream.")
    std = np.array([v.std() for v in values])
    return {"columns": columns, "mean": [float(v.mean()) for v in values],
            "std": np.where(std > 0, std, 1.0).tolist()}
