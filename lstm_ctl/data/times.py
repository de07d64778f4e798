"""Time columns: what a cell means (numbers, ISO dates and datetimes,
quarters, months, dates like Jan-1-1995) as a sortable key, and the first
cell of another form, with a message naming its line. No TensorFlow here."""

import re
import warnings

import numpy as np
import pandas as pd

from lstm_ctl.data.csv_files import _text

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


def future_times(times, horizon):
    """The `horizon` time cells after `times` (a stream's cells as written)
    when they step regularly, written as they are: numbers by their constant
    step, quarters (1974Q1) and months (1995-01) by one period, ISO dates
    and datetimes by the frequency pandas infers (daily, weekly, monthly,
    ...). None when there is no regular step (gaps, one row, other forms).
    """
    cells = pd.Series([str(t).strip() for t in times])
    if len(cells) < 2 or horizon < 1:
        return None
    numbers = pd.to_numeric(cells, errors="coerce")
    if numbers.notna().all():
        step = np.diff(numbers.to_numpy(float))
        if step[0] == 0 or not np.allclose(step, step[0]):
            return None
        out = numbers.iloc[-1] + step[0] * np.arange(1, horizon + 1)
        whole = (cells.str.fullmatch(r"-?\d+").all()
                 and float(step[0]).is_integer())
        return [str(int(round(v))) if whole else f"{v:.10g}" for v in out]
    for pattern, freq in ((r"\d{4}Q[1-4]", "Q"), (r"\d{4}-\d{2}", "M")):
        if cells.str.fullmatch(pattern, case=False).all():
            periods = pd.PeriodIndex(cells.str.upper(), freq=freq)
            if not (np.diff(periods.asi8) == 1).all():
                return None
            return [str(periods[-1] + k) for k in range(1, horizon + 1)]
    stamps = pd.to_datetime(cells, format="ISO8601", errors="coerce")
    if stamps.isna().any() or len(cells) < 3:
        return None
    freq = pd.infer_freq(pd.DatetimeIndex(stamps))
    if freq is None:
        return None
    future = pd.date_range(stamps.iloc[-1], periods=horizon + 1,
                           freq=freq)[1:]
    dated = cells.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    return [t.strftime("%Y-%m-%d") if dated else t.isoformat()
            for t in future]


# Rows in one seasonal cycle, by the step of the time column.
SEASONS = {"W": 52, "D": 7, "B": 5, "H": 24, "M": 12, "MS": 12, "ME": 12,
           "Q": 4, "QS": 4, "QE": 4}


def season_length(times):
    """The rows in one seasonal cycle (a year of weeks, months or quarters;
    a week of days; a day of hours) when the time cells step regularly by
    one such unit, else None."""
    cells = pd.Series([str(t).strip() for t in times])
    if len(cells) < 3:
        return None
    if cells.str.fullmatch(r"\d{4}Q[1-4]", case=False).all():
        return 4
    if cells.str.fullmatch(r"\d{4}-\d{2}").all():
        return 12
    if pd.to_numeric(cells, errors="coerce").notna().all():
        return None
    stamps = pd.to_datetime(cells, format="ISO8601", errors="coerce")
    if stamps.isna().any():
        return None
    try:
        with warnings.catch_warnings():   # pandas' note on its return type
            warnings.simplefilter("ignore")
            freq = pd.infer_freq(pd.DatetimeIndex(stamps))
    except (TypeError, ValueError):
        return None
    code = str(getattr(freq, "freqstr", freq) or "").split("-")[0]
    return SEASONS.get(code.upper() if code.lower() == "h" else code)
