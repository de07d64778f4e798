"""CSV files as spreadsheets and agencies write them, and DataFrames: each
equals the same data written plainly (a comma-separated file, rows in time
order, the time a row number). The arrays the model sees are compared
exactly, and a tiny model's loss on them to 1e-6."""

import csv
import io
import pathlib
import random

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from lstm_ctl import config as config_lib
from lstm_ctl.config import DataConfig, TrainConfig
from lstm_ctl.core.model import LSTMModel
from lstm_ctl.data import frame_series, frame_task, losses, readers
from lstm_ctl.data import tasks as data
from lstm_ctl.data import write_frame
from helpers import run_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
N = 48
HEADER = ["period", "gdp", "rate"]


def values(n=N, seed=0):
    """Two numeric columns: `gdp` (the target) and `rate`, as text."""
    rng = np.random.default_rng(seed)
    gdp = np.round(100 + np.cumsum(rng.standard_normal(n)), 3)
    rate = np.round(rng.uniform(0, 5, n), 2)
    return [[repr(float(g)), repr(float(r))] for g, r in zip(gdp, rate)]


TIMES = {
    "iso": [str(np.datetime64("1995-01-01") + np.timedelta64(7 * i, "D"))
            for i in range(N)],
    "quarters": [f"{1974 + i // 4}Q{i % 4 + 1}" for i in range(N)],
    "months": [f"{1995 + i // 12}-{i % 12 + 1:02d}" for i in range(N)],
    "named_dates": [f"{MONTHS[i % 12]}-1-{1995 + i // 12}"
                    for i in range(N)],
}


def write(path, header, rows, sep=",", bom=False, newline="\n", tail="",
          decimal=".", quote=False, sep_line=False):
    """A file as a spreadsheet writes it."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator=newline,
                        quoting=csv.QUOTE_ALL if quote else
                        csv.QUOTE_MINIMAL)
    writer.writerow(header)
    for row in rows:
        writer.writerow([c.replace(".", decimal) if i else c
                         for i, c in enumerate(row)])
    text = (f"sep={sep}{newline}" if sep_line else "") + out.getvalue()
    path.write_bytes((("\ufeff" if bom else "") + text + tail)
                     .encode("utf-8"))
    return str(path)


def plain(tmp_path, rows, header=HEADER, name="plain.csv"):
    """`rows` (in time order) as a plain file, the time a row number."""
    return write(tmp_path / name, header,
                 [[str(i)] + list(r[1:]) for i, r in enumerate(rows)])


def shuffled(rows, seed=1):
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


_MODELS = {}


def model_loss(task, arrays):
    """The loss of a tiny LSTMModel with fixed weights on `arrays`."""
    shape = (arrays.inputs.shape[-1], task.output_dim)
    if shape not in _MODELS:
        _MODELS[shape] = LSTMModel(4, output_dim=shape[1], input_dim=shape[0],
                                   seed=0)
    outputs, _ = _MODELS[shape](tf.constant(arrays.inputs),
                                reset_mask=tf.constant(arrays.resets))
    sums = losses.batch_sums(task, outputs, arrays.targets, arrays.weights)
    return float(losses.finalize(task, sums)["loss"])


def assert_same_data(config, reference, tmp_path, frame=None):
    """`config` (or `frame` read with it) gives the arrays of `reference`,
    exactly, and the same model loss."""
    for split in ("train", "eval"):
        task, a = data.build_task(config, split, str(tmp_path), frame=frame)
        ref_task, b = data.build_task(reference, split, str(tmp_path))
        assert a.inputs.shape == b.inputs.shape
        for k in ("inputs", "targets", "resets", "weights", "last_targets"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k),
                                          err_msg=f"{split} {k}")
        assert task.norm == ref_task.norm
        assert model_loss(task, a) == pytest.approx(
            model_loss(ref_task, b), abs=1e-6)


def csv_config(path, **kwargs):
    return DataConfig(**{**dict(task="csv", seq_len=4, batch_size=2,
                                csv_file=path, time_column="period",
                                target_columns=("gdp",)), **kwargs})


# ------------------------------------------------------- files as written
VARIANTS = {
    # Excel's "CSV UTF-8": a byte order mark before the first header cell,
    # CRLF line ends.
    "bom_crlf": ("iso", dict(bom=True, newline="\r\n")),
    # A European spreadsheet: ';' between cells, a decimal comma.
    "semicolon": ("iso", dict(sep=";", decimal=",")),
    # Excel's "sep=;" first line.
    "sep_line": ("iso", dict(sep=";", decimal=",", sep_line=True)),
    "tab": ("iso", dict(sep="\t")),
    # Blank lines and a row of empty cells at the end.
    "trailing_blank": ("iso", dict(tail="\n\n,,\n\n")),
    "quoted": ("iso", dict(quote=True)),
    "quarters": ("quarters", {}),
    "months": ("months", {}),
    "named_dates": ("named_dates", {}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_file_as_written_equals_the_plain_file(tmp_path, variant):
    times, style = VARIANTS[variant]
    rows = [[t] + v for t, v in zip(TIMES[times], values())]
    path = write(tmp_path / "as_written.csv", HEADER, shuffled(rows),
                 **style)
    reference = csv_config(plain(tmp_path, rows))
    assert_same_data(csv_config(path), reference, tmp_path)
    _, (series,) = data.eval_series(csv_config(path), str(tmp_path))
    assert series.times == TIMES[times]        # in time order, as written


def test_a_delimiter_can_be_named(tmp_path):
    rows = [[t] + v for t, v in zip(TIMES["iso"], values())]
    reference = csv_config(plain(tmp_path, rows))
    path = write(tmp_path / "t.tsv", HEADER, rows, sep="\t")
    assert_same_data(csv_config(path, csv_delimiter="tab"), reference,
                     tmp_path)
    # '|' is never sniffed; named, it reads.
    path = write(tmp_path / "p.csv", HEADER, rows, sep="|")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['gdp'\] "
                                         r"\(--target_columns\)"):
        data.build_task(csv_config(path), "train", str(tmp_path))
    assert_same_data(csv_config(path, csv_delimiter="|"), reference,
                     tmp_path)


def test_a_quoted_text_column_over_two_lines_keeps_line_numbers(tmp_path):
    rows = [[t] + v + [""] for t, v in zip(TIMES["iso"], values(12))]
    rows[2][3] = "revised,\nsee note"          # a cell over two lines
    rows[5][1] = "n/a?"
    path = write(tmp_path / "q.csv", HEADER + ["note"], rows)
    config = csv_config(path, input_columns=("gdp", "rate"))
    # line 1 header, rows 0-1 on lines 2-3, row 2 on lines 4-5: row 5 is
    # on line 8.
    with pytest.raises(ValueError, match=r"q.csv: line 8, column 'gdp': "
                                         r"'n/a\?' is not a number\.$"):
        data.build_task(config, "train", str(tmp_path))


# ---------------------------------------------------------------- panels
def panel(entities, seed=0):
    """`{entity: rows}`: id, year, sales, staff, as text."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in entities.items():
        years = 1990 + np.arange(n)
        sales = np.round(np.cumsum(rng.standard_normal(n)), 3)
        staff = np.round(rng.uniform(1, 9, n), 2)
        out[name] = [[name, str(y), repr(float(s)), repr(float(f))]
                     for y, s, f in zip(years, sales, staff)]
    return out


def panel_config(path, **kwargs):
    return DataConfig(**{**dict(
        task="csv", seq_len=3, batch_size=2, csv_file=path,
        id_column="company", time_column="year",
        target_columns=("sales",)), **kwargs})


PANEL_HEADER = ["company", "year", "sales", "staff"]


def write_panel(path, rows, **style):
    flat = shuffled([r for e in sorted(rows) for r in rows[e]])
    return write(path, PANEL_HEADER, flat, **style)


@pytest.mark.parametrize("missing", ["ffill", "drop"])
def test_an_entity_with_an_empty_target_is_dropped_with_a_line(
        tmp_path, capsys, missing):
    rows = panel({"acme": 21, "bolt": 15, "dud": 12, "core": 18})
    kept = {e: r for e, r in rows.items() if e != "dud"}
    for r in rows["dud"]:
        r[2] = ""                              # no sales at all
    # as a spreadsheet writes it: BOM, ';', blank lines at the end
    path = write_panel(tmp_path / "panel.csv", rows, bom=True, sep=";",
                       decimal=",", tail="\n\n")
    reference = panel_config(write_panel(tmp_path / "plain.csv", kept))
    config = panel_config(path, missing=missing)
    assert_same_data(config, reference, tmp_path)
    line = (f"--csv_file {path!r}: dropped --id_column 'company' value "
            f"'dud' (--missing={missing}): its target column(s) ['sales'] "
            "are empty in every row.")
    assert readers.read_csv_table(config).notes == [line]
    assert line in capsys.readouterr().err
    # Without --missing, the first empty cell stops the run, and both
    # fixes it names work (above).
    with pytest.raises(ValueError, match=r"column 'sales': missing value "
                                         r"\(''\); pass --missing=ffill"):
        data.build_task(panel_config(path), "train", str(tmp_path))


def test_an_entity_too_short_after_drop_is_dropped_with_a_line(
        tmp_path, capsys):
    rows = panel({"acme": 21, "bolt": 15, "thin": 4, "core": 18, "tiny": 2})
    kept = {e: r for e, r in rows.items() if e not in ("thin", "tiny")}
    rows["thin"][1][3] = "NA"
    rows["thin"][2][3] = ""
    rows["acme"][5][3] = ""                    # a row dropped, still long
    path = write_panel(tmp_path / "panel.csv", rows)
    kept["acme"] = [r for r in kept["acme"] if r[3]]
    reference = panel_config(write_panel(tmp_path / "plain.csv", kept))
    config = panel_config(path, missing="drop")
    assert_same_data(config, reference, tmp_path)
    notes = readers.read_csv_table(config).notes
    assert notes == [
        f"--csv_file {path!r}: dropped --id_column 'company' value 'thin' "
        "(--missing=drop): 2 row(s) left of 4 after dropping rows with a "
        "missing cell; every stream needs at least 3 (2 to train on, 1 held "
        "out).",
        f"--csv_file {path!r}: dropped --id_column 'company' value 'tiny' "
        "(--missing=drop): 2 row(s); every stream needs at least 3 (2 to "
        "train on, 1 held out)."]
    err = capsys.readouterr().err
    assert all(n in err for n in notes)
    # Without drop, a short entity is an error that names fixes that work.
    with pytest.raises(ValueError, match=r"value 'tiny' has 2 row\(s\); "
                                         r"every stream needs at least 3 .*"
                                         r"Remove its rows, or pass "
                                         r"--missing=drop"):
        data.build_task(panel_config(path, missing="ffill"), "train",
                        str(tmp_path))


def test_an_input_empty_in_one_entity_names_fixes_that_work(tmp_path,
                                                            capsys):
    rows = panel({"acme": 12, "bolt": 15, "core": 10})
    for r in rows["bolt"]:
        r[3] = ""                              # no staff in bolt
    path = write_panel(tmp_path / "panel.csv", rows)
    message = (r"column 'staff' has no value at all in stream 'bolt'; "
               r"--missing=ffill has nothing to fill it from \(leave the "
               r"column out with --input_columns, or pass --missing=drop")
    with pytest.raises(ValueError, match=message):
        data.build_task(panel_config(path, missing="ffill"), "train",
                        str(tmp_path))
    # Both fixes work.
    without = {e: r for e, r in rows.items() if e != "bolt"}
    reference = panel_config(write_panel(tmp_path / "plain.csv", without))
    assert_same_data(panel_config(path, missing="drop"), reference,
                     tmp_path)
    assert (f"--csv_file {path!r}: dropped --id_column 'company' value "
            "'bolt' (--missing=drop): 0 row(s) left of 15") in \
        capsys.readouterr().err
    data.build_task(panel_config(path, missing="ffill",
                                 input_columns=("sales",)), "train",
                    str(tmp_path))


def test_no_stream_left_is_one_line_with_the_reasons(tmp_path, capsys):
    rows = panel({"acme": 4, "bolt": 5})
    rows["acme"][0][3] = rows["acme"][1][3] = ""
    for r in rows["bolt"]:
        r[2] = ""
    path = write_panel(tmp_path / "panel.csv", rows)
    with pytest.raises(ValueError) as e:
        data.build_task(panel_config(path, missing="drop"), "train",
                        str(tmp_path))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"--csv_file {path!r}: no stream is left "
                              "after --missing=drop: ")
    assert ("after --missing=drop: dropped --id_column 'company' value "
            "'acme' (--missing=drop): 2 row(s) left of 4") in message
    assert ("value 'bolt' (--missing=drop): its target column(s) ['sales'] "
            "are empty") in message


def test_a_target_empty_everywhere_is_one_line(tmp_path):
    rows = panel({f"c{i:03d}": 4 for i in range(30)})
    for e in rows:
        for r in rows[e]:
            r[2] = "NA"
    path = write_panel(tmp_path / "panel.csv", rows)
    for missing in ("error", "ffill", "drop"):
        with pytest.raises(ValueError, match=r"panel.csv': the "
                                             r"--target_columns \['sales'\] "
                                             r"are empty in every row; name "
                                             r"columns that have values\.$"):
            data.build_task(panel_config(path, missing=missing), "train",
                            str(tmp_path))
    # Every entity too short: the first five reasons, and a count.
    rows = panel({f"c{i:03d}": 2 for i in range(30)})
    path = write_panel(tmp_path / "short.csv", rows)
    with pytest.raises(ValueError, match=r"no stream is left after "
                                         r"--missing=drop: dropped .*'c000'"
                                         r".*'c004' .* \.\.\. and 25 more "
                                         r"\(lines above\)$"):
        data.build_task(panel_config(path, missing="drop"), "train",
                        str(tmp_path))


def test_a_file_whose_every_row_is_dropped_is_named(tmp_path, capsys):
    rows = [[t] + v for t, v in zip(TIMES["iso"], values(10))]
    good = write(tmp_path / "a.csv", HEADER, rows)
    gone = [[""] + r[1:] for r in rows]        # no time in any row
    write(tmp_path / "b.csv", HEADER, gone)
    config = csv_config(str(tmp_path / "*.csv"), missing="drop")
    assert_same_data(config, csv_config(good), tmp_path)
    assert (f"dropped file {str(tmp_path / 'b.csv')!r} (--missing=drop): 0 "
            "row(s) left of 10") in capsys.readouterr().err


# ------------------------------------------------------------ DataFrames
def frame_of(rows, header=HEADER):
    frame = pd.DataFrame(rows, columns=header)
    for c in header[1:]:
        frame[c] = frame[c].astype(float)
    return frame


def test_a_dataframe_equals_the_same_table_in_a_file(tmp_path):
    rows = [[t] + v for t, v in zip(TIMES["quarters"], values())]
    reference = csv_config(plain(tmp_path, rows))
    config = csv_config(None)
    # Text times, as read from a file.
    frame = frame_of(shuffled(rows))
    assert_same_data(config, reference, tmp_path, frame=frame)
    # Typed times: periods, datetimes; the time as the index.
    periods = frame.assign(period=pd.PeriodIndex(frame["period"], freq="Q"))
    assert_same_data(config, reference, tmp_path, frame=periods)
    stamps = periods.assign(period=periods["period"].dt.start_time)
    assert_same_data(config, reference, tmp_path,
                     frame=stamps.set_index("period"))
    task, arrays = frame_task(periods, config, "eval", str(tmp_path))
    np.testing.assert_array_equal(
        arrays.inputs, data.build_task(reference, "eval",
                                       str(tmp_path))[1].inputs)
    _, (series,) = frame_series(periods, config, str(tmp_path))
    assert (series.name, series.times) == ("the DataFrame", TIMES["quarters"])
    # write_frame: a file that reads back as the same table, to train on.
    path = write_frame(stamps.set_index("period"), str(tmp_path / "w.csv"))
    assert_same_data(csv_config(path), reference, tmp_path)


def test_a_dataframe_panel_with_int_ids(tmp_path):
    rows = panel({"1": 12, "2": 14, "10": 11})
    reference = panel_config(write_panel(tmp_path / "plain.csv", rows))
    frame = pd.DataFrame([r for e in rows for r in rows[e]],
                         columns=PANEL_HEADER).astype(
        {"company": int, "year": int, "sales": float, "staff": float})
    assert_same_data(panel_config(None), reference, tmp_path, frame=frame)


def test_dataframe_errors_name_the_row(tmp_path):
    frame = frame_of([[t] + v for t, v in zip(TIMES["iso"], values(10))])
    frame = frame.astype({"rate": object})
    frame.loc[4, "rate"] = "high"
    with pytest.raises(ValueError, match=r"^the DataFrame: row 4, column "
                                         r"'rate': 'high' is not a number"):
        frame_task(frame, csv_config(None))
    with pytest.raises(ValueError, match=r"the DataFrame has no column\(s\) "
                                         r"\['gdp'\] \(--target_columns\)"):
        frame_task(frame.drop(columns="gdp"), csv_config(None))
    with pytest.raises(ValueError, match="not both"):
        frame_task(frame, csv_config("x.csv"))
    # A run records its data in config.json: a DataFrame is not a path.
    with pytest.raises(ValueError, match=r"csv_file must be a path .* "
                                         r"lstm_ctl.data.write_frame"):
        config_lib.validate(TrainConfig(data=csv_config(frame)))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("text, message", [
    ("period,gdp\n1,2\n2\n3,4\n", r"b.csv: line 3 has 1 cells, the header "
                                  r"has 2\.$"),
    ("period,gdp\n1,2\n2,3,4\n3,4\n", r"b.csv: line 3 has 3 cells, the "
                                      r"header has 2\.$"),
    ("period,gdp\n1,2\n\n3,4\n", r"b.csv: line 3 has 0 cells, the header "
                                 r"has 2\.$"),
    ("period,gdp,gdp\n1,2,3\n", r"b.csv: the header names \['gdp'\] more "
                                r"than once"),
    ("period,gdp\n1974Q1,1\n1974Q2,2\n1974-07,3\n",
     r"line 4, column 'period': '1974-07' is not a quarter like '1974Q1', "
     r"the first cell of the --time_column"),
    ("period,gdp\n01/02/1995,1\n02/02/1995,2\n03/02/1995,3\n",
     r"line 2, column 'period': the --time_column reads as month/day/year "
     r"and as day/month/year \('01/02/1995'\); write its dates as ISO"),
    ("period,gdp\n1995-01,1\n1995-02,2\nMar 1995,3\n",
     r"line 4, column 'period': 'Mar 1995' is not an ISO date or datetime "
     r".* a quarter \(1974Q1\), a month .* or a number"),
    ("period,gdp\n1995,1\n1996,2\n1997Q1,3\n",
     r"line 4, column 'period': '1997Q1' is not a number \(the earlier "
     r"cells of the --time_column are numbers\)"),
    ("period,gdp\n1,1\n2,2\n3,1e999\n", r"line 4, column 'gdp': '1e999' is "
                                        r"not finite"),
    ("\ufeff", r"--csv_file '.*b.csv' is empty"),
    ("period,gdp\n\n\n", r"has a header but no rows"),
])
def test_bad_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "b.csv"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(ValueError, match=message):
        data.build_task(csv_config(str(path), batch_size=1, seq_len=1),
                        "train", str(tmp_path))


def test_a_file_that_is_not_utf8_says_how_to_save_it(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("period,gdp\n1,2\n2,3\n3,4\n# caf\xe9\n".encode(
        "latin-1"))
    with pytest.raises(ValueError, match=r"latin.csv' is not UTF-8: invalid "
                                         r"byte at offset 28 \(line 5\); "
                                         r"save it as UTF-8"):
        data.build_task(csv_config(str(path)), "train", str(tmp_path))


@pytest.mark.parametrize("kwargs, message", [
    (dict(csv_delimiter=";;"), "csv_delimiter must be one character"),
    (dict(task="text", text_file="t.txt", csv_delimiter=";"),
     "csv_delimiter is for --task=csv"),
])
def test_config_checks_the_delimiter(kwargs, message):
    data_config = DataConfig(**{**dict(task="csv", csv_file="d.csv",
                                       target_columns=("b",)), **kwargs})
    with pytest.raises(ValueError, match=message):
        config_lib.validate(TrainConfig(data=data_config))
    for ok in (None, ",", ";", "tab", "|"):
        config_lib.validate(TrainConfig(data=DataConfig(
            task="csv", csv_file="d.csv", target_columns=("b",),
            csv_delimiter=ok)))


# ------------------------------------------------ advice that can be taken
def test_too_little_data_names_only_fixes_that_work(tmp_path):
    rows = [[t] + v for t, v in zip(TIMES["iso"], values(12))]
    path = write(tmp_path / "s.csv", HEADER, rows)     # 10 train pairs
    with pytest.raises(ValueError, match=r"too few for 8 parallel streams "
                                         r".* Use --batch_size=2 or less, "
                                         r"or more data\.$"):
        data.build_task(csv_config(path, batch_size=8), "train",
                        str(tmp_path))
    with pytest.raises(ValueError, match=r"too few for 8 parallel streams "
                                         r".* Use --batch_size=1 and "
                                         r"--seq_len=10 or less, or more "
                                         r"data\.$"):
        data.build_task(csv_config(path, batch_size=8, seq_len=20), "train",
                        str(tmp_path))
    with pytest.raises(ValueError, match=r"fewer than one chunk of "
                                         r"--seq_len=20\. Use --seq_len=10 or "
                                         r"less, or more data\.$"):
        data.build_task(csv_config(path, batch_size=1, seq_len=20), "train",
                        str(tmp_path))
    with pytest.raises(ValueError, match=r"--seq_len=5 or less, or a smaller "
                                         r"--batch_size, or more data\.$"):
        data.build_task(csv_config(path, batch_size=2, seq_len=20), "train",
                        str(tmp_path))
    # The fixes named work.
    data.build_task(csv_config(path, batch_size=2), "train", str(tmp_path))
    data.build_task(csv_config(path, batch_size=1, seq_len=10), "train",
                    str(tmp_path))
    tiny = write(tmp_path / "t.csv", HEADER, rows[:3])  # 1 train pair
    with pytest.raises(ValueError, match=r"too few for 1 parallel streams "
                                         r".* Use more data\.$"):
        data.build_task(csv_config(tiny, batch_size=1, seq_len=1), "train",
                        str(tmp_path))


# ------------------------------------------------------------ end to end
def test_train_and_evaluate_on_a_spreadsheet_export(tmp_path):
    rows = [[t] + v for t, v in zip(TIMES["quarters"], values())]
    path = write(tmp_path / "export.csv", HEADER, shuffled(rows), bom=True,
                 sep=";", decimal=",", newline="\r\n", tail="\r\n;;\r\n")
    model_dir = tmp_path / "run"
    result = run_main("train.py", f"--model_dir={model_dir}", "--task=csv",
                      f"--csv_file={path}", "--csv_delimiter=;",
                      "--time_column=period", "--target_columns=gdp",
                      "--units=8", "--seq_len=4", "--batch_size=2",
                      "--train_steps=2", "--log_every=1", "--ensemble=1")
    assert result.returncode == 0, result.stderr
    assert config_lib.load(str(model_dir)).data.csv_delimiter == ";"
    result = run_main("evaluate.py", f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr
