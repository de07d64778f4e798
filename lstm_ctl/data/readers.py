"""Reading and validating user data: text and CSV files as they come.

`--text_file` and `--csv_file` name a file, a directory (its files, sorted;
hidden files skipped) or a glob. Text: each file is one stream. CSV: the
files are one table (same header); the streams are the `--id_column`'s
entities, or the files when there is no id column; rows are ordered by the
`--time_column` within each stream. Missing cells (empty, NA, NaN, null)
follow `--missing`. Every problem is a `ValueError` (or `FileNotFoundError`)
whose one-line message names the file, line, column and the flag that fixes
it. Nothing here normalises or lays out data (see data.py).
"""

import csv
import dataclasses
import datetime
import glob
import json
import math
import os
from typing import List

import numpy as np

MISSING_TOKENS = {"", "na", "n/a", "nan", "null", "none"}
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
def expand_paths(spec, flag):
    """The files that `spec` (a file, a directory or a glob) names, sorted."""
    if os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        paths = sorted(os.path.join(spec, n) for n in os.listdir(spec)
                       if not n.startswith(".")
                       and os.path.isfile(os.path.join(spec, n)))
        if not paths:
            raise ValueError(f"{flag} {spec!r} is a directory without files.")
        return paths
    if glob.has_magic(spec):
        paths = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
        if not paths:
            raise ValueError(f"{flag} {spec!r} matches no file.")
        return paths
    raise FileNotFoundError(f"{flag} {spec!r} does not exist.")


def stream_name(path):
    return os.path.basename(path)


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


# ------------------------------------------------------------------- CSV
def _read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"--csv_file {path!r} is empty.")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {r + 2} has {len(row)} cells, the"
                             f" header has {len(header)}.")
    return header, body


def read_csv_files(spec):
    """`(header, rows)`: the files of `--csv_file` as one table. A row is
    `(file, line, cells)`."""
    paths = expand_paths(spec, "--csv_file")
    header, rows = None, []
    for path in paths:
        h, body = _read_rows(path)
        if header is None:
            header, first = h, path
        elif h != header:
            raise ValueError(f"--csv_file: {path!r} has the header {h}, "
                             f"{first!r} has {header}; all files need the "
                             "same header.")
        rows += [(path, r + 2, cells) for r, cells in enumerate(body)]
    return header, rows


def _missing(cell):
    return cell.strip().lower() in MISSING_TOKENS


def _number(cell, where, column, hint=""):
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{where}, column {column!r}: {cell!r} is not a "
                         f"number{hint}.") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}, column {column!r}: {cell!r} is not "
                         "finite.")
    return value


def _time_key(cell, where, column, kind):
    """A sortable number for a time cell: a number, or an ISO date/datetime
    (seconds since 1970, UTC when no zone is given)."""
    text = cell.strip()
    if kind == "number":
        return _number(text, where, column,
                       " (the earlier cells of the --time_column are "
                       "numbers)")
    try:
        t = datetime.datetime.fromisoformat(
            text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(
            f"{where}, column {column!r}: {cell!r} is not an ISO date or "
            "datetime (e.g. 2024-01-31 or 2024-01-31T12:00:00) or a number, "
            "as a --time_column must be.") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def _time_kind(cell):
    try:
        float(cell)
        return "number"
    except ValueError:
        return "date"


def _check_columns(header, config, spec):
    def known(names, flag):
        unknown = [c for c in names if c not in header]
        if unknown:
            raise ValueError(f"--csv_file {spec!r} has no column(s) "
                             f"{unknown} ({flag}); its columns are {header}.")

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
        raise ValueError(f"--csv_file {spec!r} has no column left to use as "
                         f"an input (its columns are {header}).")
    return inputs


def read_csv_table(config):
    """The CSV streams of a DataConfig (`task="csv"`), as a `CsvTable`.

    Input columns: `config.input_columns`, or every column other than the
    time and id columns. Rows with missing cells: an error, filled, or
    dropped (`config.missing`).
    """
    spec = config.csv_file
    header, rows = read_csv_files(spec)
    if not rows:
        raise ValueError(f"--csv_file {spec!r} has a header but no rows.")
    inputs = _check_columns(header, config, spec)
    targets = list(config.target_columns)
    used = list(dict.fromkeys(inputs + targets))
    groups, first_missing = _group_rows(config, header, rows, used)
    if first_missing and config.missing == "error":
        raise ValueError(first_missing)
    streams = []
    # Entities in the order of their ids; files in the order of their paths.
    for key in (sorted(groups) if config.id_column else groups):
        members = groups[key]
        name = key if config.id_column else stream_name(key)
        if config.time_column:
            _check_duplicates(name, members, config)
            members = sorted(members, key=lambda m: m[0])
        if len(members) < MIN_STREAM_ROWS:
            what = (f"--id_column {config.id_column!r} value {name!r}"
                    if config.id_column else f"file {members[0][1]!r}")
            raise ValueError(
                f"--csv_file {spec!r}: {what} has {len(members)} row(s); "
                f"every stream needs at least {MIN_STREAM_ROWS} (2 to train "
                "on, 1 held out).")
        values = np.array([m[4] for m in members], np.float64)  # [L, C]
        x = values[:, [used.index(c) for c in inputs]]
        y = values[:, [used.index(c) for c in targets]]
        if config.missing == "ffill":
            x = _ffill(x, name, inputs)
        times = ([m[3] for m in members] if config.time_column
                 else list(range(len(members))))
        streams.append(CsvStream(name, x, y, times))
    if not streams:
        raise ValueError(f"--csv_file {spec!r}: no row is left after "
                         "--missing=drop.")
    return CsvTable(inputs, targets, streams)


def _group_rows(config, header, rows, used):
    """`({stream key: [(time key, path, line, time, values)]}, the first
    missing cell's message or None)`; the key is the id, or the file."""
    col = {c: header.index(c) for c in header}
    hint = ("" if config.input_columns else
            "; a column of names or labels can be the --id_column, a date "
            "the --time_column, or leave it out with --input_columns=<the "
            "numeric columns>")
    groups, time_kind, first_missing = {}, None, None
    for path, line, cells in rows:
        where = f"{path}: line {line}"
        keys = [k for k in (config.time_column, config.id_column)
                if k and _missing(cells[col[k]])]
        if keys:
            if config.missing == "drop":
                continue
            raise ValueError(f"{where}: the {_flag_of(config, keys[0])} "
                             f"{keys[0]!r} is empty; every row needs one (or "
                             "pass --missing=drop to drop such rows).")
        values = []
        for c in used:
            cell = cells[col[c]]
            if _missing(cell):
                # Reported once every cell is read, so that a column that
                # is not numeric at all is named first.
                first_missing = first_missing or (
                    f"{where}, column {c!r}: missing value ({cell!r}); pass "
                    "--missing=ffill (fill inputs from the last value, skip "
                    "missing targets) or --missing=drop (drop such rows).")
                values.append(math.nan)
            else:
                values.append(_number(cell, where, c, hint))
        if config.missing == "drop" and any(map(math.isnan, values)):
            continue
        key, time = None, None
        if config.time_column:
            time = cells[col[config.time_column]].strip()
            time_kind = time_kind or _time_kind(time)
            key = _time_key(time, where, config.time_column, time_kind)
        group = (cells[col[config.id_column]].strip() if config.id_column
                 else path)
        groups.setdefault(group, []).append((key, path, line, time, values))
    return groups, first_missing


def _flag_of(config, column):
    return ("--time_column" if column == config.time_column
            else "--id_column")


def _check_duplicates(name, members, config):
    seen = {}
    for key, path, line, time, _ in members:
        if key in seen:
            first_path, first_line = seen[key]
            who = (f" for --id_column {config.id_column!r} value {name!r}"
                   if config.id_column else "")
            raise ValueError(
                f"{path}: line {line} repeats the time {time!r} of "
                f"{first_path} line {first_line}{who}; each time may occur "
                "once per stream (--time_column "
                f"{config.time_column!r}).")
        seen[key] = (path, line)


def _ffill(x, name, columns):
    """Forward fill along time; leading gaps take the first value."""
    x = x.copy()
    for j in range(x.shape[1]):
        present = np.flatnonzero(~np.isnan(x[:, j]))
        if not len(present):
            raise ValueError(
                f"--csv_file: column {columns[j]!r} has no value at all in "
                f"stream {name!r}; --missing=ffill has nothing to fill it "
                "from (leave the column out with --input_columns).")
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
