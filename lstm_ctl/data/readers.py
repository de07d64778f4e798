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

import csv
import dataclasses
import glob
import io
import itertools
import json
import os
import re
import sys
from typing import List

import numpy as np
import pandas as pd

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
# Read by pandas (encoding, delimiters, quoting, line ends); what pandas
# leaves open (which rows are short, what a time cell means, which stream a
# row belongs to) is decided here, with messages that name file, line,
# column and flag.
DELIMITERS = (",", ";", "\t")
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}
DATAFRAME = "the DataFrame"
MISSING_FIX = ("pass --missing=ffill (fill inputs from the last value, skip "
               "missing targets) or --missing=drop (drop such rows).")
TIME_FORMS = ("an ISO date or datetime (e.g. 2024-01-31 or "
              "2024-01-31T12:00:00), a quarter (1974Q1), a month (1995-01, "
              "1995M01, Jan-1995), a date like Jan-1-1995, 1-Jan-1995 or "
              "01/31/1995, or a number")
QUARTER = re.compile(r"^(?:(\d{4})\s*[-/ ]?\s*Q([1-4])|Q([1-4])\s*[-/ ]?\s*"
                     r"(\d{4}))$", re.IGNORECASE)
# (what a cell of that form is, its strptime format); the first form that
# reads the first time cell and every other one is the column's.
TIME_FORMATS = (
    ("an ISO date or datetime", "ISO8601"),
    ("a quarter", "quarter"),
    ("a month", "%YM%m"),
    ("a date", "%b-%d-%Y"), ("a date", "%d-%b-%Y"), ("a date", "%b %d, %Y"),
    ("a date", "%B %d, %Y"), ("a date", "%d %b %Y"), ("a date", "%d %B %Y"),
    ("a month", "%b-%Y"), ("a month", "%b %Y"), ("a month", "%B %Y"),
    ("a month", "%b-%y"),
    ("a date", "%m/%d/%Y"), ("a date", "%d/%m/%Y"), ("a date", "%d.%m.%Y"),
)
_SAID = set()


@dataclasses.dataclass
class Source:
    """One table as read: a CSV file (every cell as text) or a DataFrame."""
    name: str                 # the file's path, or "the DataFrame"
    frame: pd.DataFrame       # columns named as in the header
    lines: np.ndarray         # [rows] line in the file (or DataFrame label)
    unit: str = "line"        # "line" (a file) or "row" (a DataFrame)
    decimal_comma: bool = False   # 1,5 is 1.5 (files not separated by ',')

    def where(self, i):
        return f"{self.name}: {self.unit} {self.lines[i]}"

    def ref(self, i):
        return f"{self.name} {self.unit} {self.lines[i]}"


def say(line, once=True):
    """Prints a line about the data on stderr; a line about a file once per
    process (a run reads its files for training and again to evaluate)."""
    if not once or line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr, flush=True)


def delimiter_char(name):
    """The character a --csv_delimiter names ('tab' -> a tab); None when
    it is to be sniffed."""
    if not name:
        return None
    return DELIMITER_NAMES.get(name, name)


def sniff_delimiter(text):
    """',', ';' or tab: the one that splits the header into the most cells,
    preferring one that gives the first lines as many cells each."""
    def score(delimiter):
        try:
            rows = [r for r in itertools.islice(
                csv.reader(io.StringIO(text), delimiter=delimiter), 50) if r]
        except csv.Error:
            return (False, False, 0)
        width = len(rows[0]) if rows else 0
        return (width > 1, all(len(r) == width for r in rows), width)
    return max(DELIMITERS, key=score)   # ties: the earlier one


def _decode(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")     # drops a byte order mark
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(
            f"--csv_file {path!r} is not UTF-8: invalid byte at offset "
            f"{e.start} (line {line}); save it as UTF-8 (Excel: \"CSV "
            "UTF-8\").") from None


def _record_lines(text, delimiter, count):
    """The line each of the first `count` records starts on (a quoted cell
    may span lines)."""
    try:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        starts, end = [], 0
        for _ in reader:
            starts.append(end + 1)
            end = reader.line_num
    except csv.Error:
        starts = []
    if len(starts) != count:
        starts = list(range(1, count + 1))
    return np.array(starts)


def _blank(frame):
    """[rows, columns]: the cell is absent (a short line) or empty."""
    return frame.isna().to_numpy() | np.stack(
        [frame[c].fillna("").str.strip().eq("").to_numpy()
         for c in frame.columns], axis=1)


def read_csv_file(path, delimiter=None):
    """One file of `--csv_file` as a `Source`: the delimiter is `delimiter`,
    an Excel `sep=;` first line, or sniffed; a UTF-8 byte order mark,
    blank lines and rows of empty cells at the end, and unnamed empty
    columns (Excel writes them) are dropped."""
    text, skipped = _decode(path), 0
    sep_line = re.match(r"sep=(.)\r?\n", text)
    if sep_line:
        delimiter = delimiter or sep_line.group(1)
        text, skipped = text[sep_line.end():], 1
    if not text.strip():
        raise ValueError(f"--csv_file {path!r} is empty.")
    delimiter = delimiter or sniff_delimiter(text)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, header=None,
                            dtype=str, keep_default_na=False,
                            skip_blank_lines=False, engine="python")
    except pd.errors.ParserError as e:
        wide = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)",
                         str(e))
        if wide:
            expected, line, cells = map(int, wide.groups())
            raise ValueError(f"{path}: line {line + skipped} has {cells} "
                             f"cells, the header has {expected}.") from None
        raise ValueError(f"{path}: not readable as CSV ({e}).") from None
    lines = _record_lines(text, delimiter, len(frame)) + skipped
    header = ["" if pd.isna(h) else str(h).strip() for h in frame.iloc[0]]
    body, lines = frame.iloc[1:].reset_index(drop=True), lines[1:]
    blank = _blank(body)
    rows = len(body)
    while rows and blank[rows - 1].all():    # blank lines at the end
        rows -= 1
    body, lines, blank = body.iloc[:rows], lines[:rows], blank[:rows]
    short = body.isna().to_numpy().any(1)
    if short.any():
        i = int(np.argmax(short))
        raise ValueError(f"{path}: line {lines[i]} has "
                         f"{int(body.iloc[i].notna().sum())} cells, the "
                         f"header has {len(header)}.")
    keep = [j for j, h in enumerate(header) if h or not blank[:, j].all()]
    body = body.iloc[:, keep]
    body.columns = [header[j] for j in keep]
    _check_unique(body.columns, path)
    return Source(path, body, lines, "line", decimal_comma=delimiter != ",")


def _check_unique(columns, name):
    twice = sorted({c for c in columns if list(columns).count(c) > 1})
    if twice:
        raise ValueError(f"{name}: the header names {twice} more than once; "
                         "each column needs its own name.")


def read_csv_files(spec, delimiter=None):
    """The files of `--csv_file` as `Source`s with one header."""
    sources = []
    for path in expand_paths(spec, "--csv_file"):
        source = read_csv_file(path, delimiter_char(delimiter))
        if sources and list(source.frame.columns) != list(
                sources[0].frame.columns):
            raise ValueError(
                f"--csv_file: {path!r} has the header "
                f"{list(source.frame.columns)}, {sources[0].name!r} has "
                f"{list(sources[0].frame.columns)}; all files need the same "
                "header.")
        sources.append(source)
    return sources


def frame_source(frame):
    """A pandas DataFrame as a `Source`: columns by name, a named index
    (e.g. `df.set_index("date")`) as a column; messages name its rows by
    their index labels."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame; got "
                        f"{type(frame).__name__}")
    named = [n for n in frame.index.names if n is not None]
    if named:
        frame = frame.reset_index(level=named)
        labels = np.arange(len(frame))
    else:
        labels = np.asarray(frame.index)
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_unique(frame.columns, DATAFRAME)
    return Source(DATAFRAME, frame, labels, "row")


def write_frame(frame, path):
    """Writes a DataFrame as a CSV file that reads back as the same table
    (a named index as a column; floats to the last digit; dates, datetimes
    and periods as ISO dates, datetimes and quarters/months), so that a run
    trained on it can be resumed and evaluated from its config.json.
    Returns `path`."""
    frame = frame_source(frame).frame
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    frame.to_csv(path + ".tmp", index=False)
    os.replace(path + ".tmp", path)
    return path


def _missing(column):
    """[rows] bool: the cell is empty or NA, N/A, NaN, null, None."""
    na = column.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(column.dtype) or \
            isinstance(column.dtype, (pd.DatetimeTZDtype, pd.PeriodDtype)) \
            or pd.api.types.is_datetime64_any_dtype(column.dtype):
        return na
    text = _text(column).str.strip().str.lower()
    return na | text.isin(MISSING_TOKENS).to_numpy()


def _text(column):
    """A column's cells as written (text), '' where absent."""
    return column.astype(object).where(column.notna(), "").astype(str)


def _numbers(column, decimal_comma):
    """`(values [rows] float64, missing [rows], bad [rows])`: bad is 1 where
    a cell is not a number, 2 where it is not finite."""
    missing = _missing(column)
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(np.float64, na_value=np.nan)
    else:
        text = _text(column).str.strip()
        text = text.where(~decimal_comma, text.str.replace(
            r"^([+-]?\d*),(\d+)$", r"\1.\2", regex=True))
        values = pd.to_numeric(text.where(~missing, "nan"),
                               errors="coerce").to_numpy(np.float64)
    bad = np.where(~missing & np.isnan(values), 1,
                   np.where(np.isinf(values), 2, 0))
    return np.where(missing | (bad > 0), np.nan, values), missing, bad


def _seconds(times):
    """datetimes (a Series) -> seconds since 1970, UTC when no zone."""
    if getattr(times.dt, "tz", None) is None:
        times = times.dt.tz_localize("UTC")
    return ((times - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
            ).to_numpy(np.float64)


def _parse_times(text, form):
    """[rows] seconds since 1970 (NaN where a cell is not of `form`)."""
    if form == "quarter":
        parts = text.str.extract(QUARTER)
        year = parts[0].fillna(parts[3])
        quarter = parts[1].fillna(parts[2])
        month = (pd.to_numeric(quarter, errors="coerce") * 3 - 2)
        text = year + "-" + month.map(
            lambda m: "" if pd.isna(m) else f"{int(m):02d}") + "-01"
        form = "ISO8601"
    utc = dict(utc=True) if form == "ISO8601" else {}
    times = pd.to_datetime(text, format=form, errors="coerce", **utc)
    return _seconds(times)


def _time_keys(column, kept, where, name):
    """`(keys [rows] float64, times [rows] str, error)`: a sortable number
    for each kept row's time cell (seconds since 1970 for dates), the cells
    as written, and `(row, message)` for the first cell that is not of the
    column's kind (or None). The first kept cell sets the kind: a number,
    or the first of TIME_FORMATS that reads it and, where one does, every
    other cell."""
    n = len(column)
    keys = np.full(n, np.nan)
    dtype = column.dtype
    if isinstance(dtype, pd.PeriodDtype):
        keys[kept] = _seconds(column[kept].dt.start_time)
        return keys, _text(column).tolist(), None
    if pd.api.types.is_datetime64_any_dtype(dtype):
        keys[kept] = _seconds(column[kept])
        return keys, _text(column).tolist(), None
    if pd.api.types.is_numeric_dtype(dtype):
        keys[kept] = column[kept].to_numpy(np.float64)
        return keys, _text(column).tolist(), None
    raw = _text(column)
    text = raw.str.strip()
    rows = np.flatnonzero(kept)
    if not len(rows):
        return keys, text.tolist(), None
    first = text.iloc[rows[0]]
    live = text[kept]
    numbers = pd.to_numeric(live, errors="coerce").to_numpy(np.float64)
    if not np.isnan(numbers[0]):
        keys[kept] = numbers
        bad = np.flatnonzero(~np.isfinite(numbers))
        if not len(bad):
            return keys, text.tolist(), None
        i = rows[bad[0]]
        why = ("is not finite." if np.isinf(numbers[bad[0]]) else
               "is not a number (the earlier cells of the --time_column "
               "are numbers).")
        return keys, text.tolist(), (
            i, f"{where(i)}, column {name!r}: {raw.iloc[i]!r} {why}")
    head = live.iloc[:1]
    forms = [(what, form) for what, form in TIME_FORMATS
             if np.isfinite(_parse_times(head, form)[0])]
    if not forms:
        i = rows[0]
        return keys, text.tolist(), (
            i, f"{where(i)}, column {name!r}: {raw.iloc[i]!r} is not "
               f"{TIME_FORMS}, as a --time_column must be.")
    parsed = []
    for what, form in forms:
        values = _parse_times(live, form)
        parsed.append((what, form, values))
        if np.isfinite(values).all() and form != "%m/%d/%Y":
            break
    complete = [p for p in parsed if np.isfinite(p[2]).all()]
    if {p[1] for p in complete} >= {"%m/%d/%Y", "%d/%m/%Y"}:
        i = rows[0]
        return keys, text.tolist(), (
            i, f"{where(i)}, column {name!r}: the --time_column reads as "
               f"month/day/year and as day/month/year ({first!r}); write "
               "its dates as ISO dates (1995-01-31), which have one "
               "meaning.")
    what, form, values = (complete or parsed)[0]
    keys[kept] = values
    bad = np.flatnonzero(np.isnan(values))
    if not len(bad):
        return keys, text.tolist(), None
    i = rows[bad[0]]
    why = (f"is not {TIME_FORMS}, as a --time_column must be."
           if form == "ISO8601" else
           f"is not {what} like {first!r}, the first cell of the "
           "--time_column (a time column holds one kind of time).")
    return keys, text.tolist(), (
        i, f"{where(i)}, column {name!r}: {raw.iloc[i]!r} {why}")


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
