"""Reading CSV files and DataFrames as they come: pandas does encoding,
delimiters (sniffed or --csv_delimiter), quoting and line ends; what pandas
leaves open (short rows, cells that are not numbers) is decided here, with
messages that name the file, line and column. No TensorFlow here."""

import csv
import dataclasses
import glob
import io
import itertools
import os
import re
import sys

import numpy as np
import pandas as pd

from lstm_ctl import files

MISSING_TOKENS = {"", "na", "n/a", "nan", "null", "none"}

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
    with files.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
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
