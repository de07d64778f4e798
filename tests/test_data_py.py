"""train.py and evaluate.py on data as it comes: one-line errors, short
hold-outs, and the resolved columns that resume and evaluation reuse."""

import io
import json
import math
import pathlib

import numpy as np
import pytest

from lstm_ctl import config as config_lib
from lstm_ctl.run import checkpoints
from lstm_ctl.eval import engine as evaluation
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
from helpers import run_main

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--units=8", "--seq_len=5", "--batch_size=2", "--train_steps=2",
        "--log_every=1", "--checkpoint_every=2"]


def run(script, *args):
    return run_main(script, *args)


def write(path, text):
    path.write_text(text)
    return str(path)


PANEL = "id,year,v\n" + "".join(f"{e},{2000 + i},{i}\n" for e in "ab"
                                 for i in range(6))


@pytest.mark.parametrize("files, flags, message", [
    ({"d.csv": PANEL}, ["--time_column=year"],
     "column 'id': 'a' is not a number; a column of names or labels can be "
     "the --id_column"),
    ({"d.csv": PANEL + "a,2003,9\n"}, ["--id_column=id", "--time_column=year"],
     "line 14 repeats the time '2003' of"),
    ({"d.csv": "t,v\n2024-01-01,1\nsoon,2\n"}, ["--time_column=t"],
     "line 3, column 't': 'soon' is not an ISO date or datetime"),
    ({"d.csv": PANEL, "e.csv": "id,v\na,1\n"}, [],
     "has the header ['id', 'v']"),
    ({"d.csv": PANEL + "c,2000,1\n"}, ["--id_column=id", "--time_column=year"],
     "--id_column 'id' value 'c' has 1 row(s)"),
    ({}, [], "matches no file"),
    ({"d.csv": PANEL}, ["--id_column=id", "--input_columns=w"],
     "has no column(s) ['w'] (--input_columns)"),
])
def test_bad_data_is_one_line_exit_1_and_nothing_written(tmp_path, files,
                                                         flags, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    model_dir = tmp_path / "never"
    result = run("train.py", f"--model_dir={model_dir}", "--task=csv",
                 f"--csv_file={tmp_path / '*.csv'}", "--target_columns=v",
                 *flags, *TINY)
    assert result.returncode == 1, result.stderr
    # (TensorFlow's start-up lines about CUDA aside.)
    lines = [line for line in result.stderr.splitlines()
             if line.startswith("train.py")]
    assert len(lines) == 1 and lines[0].startswith("train.py: error: ")
    assert message in lines[0] and "Traceback" not in result.stderr
    assert not model_dir.exists()


def test_evaluate_works_wherever_train_trained_a_short_holdout(tmp_path):
    rows = "".join(f"{1970 + i // 4}-{1 + 3 * (i % 4):02d}-01,"
                   f"{math.sin(i / 4):.4f}\n" for i in range(200))
    csv = write(tmp_path / "q.csv", "quarter,gdp\n" + rows)
    model_dir = tmp_path / "run"
    result = run("train.py", f"--model_dir={model_dir}", "--task=csv",
                 f"--csv_file={csv}", "--target_columns=gdp",
                 "--time_column=quarter", "--batch_size=4", "--seq_len=10",
                 "--train_steps=2", "--units=8", "--log_every=1",
                 "--ensemble=1")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "rows.json"
    result = run("evaluate.py", f"--model_dir={model_dir}",
                 f"--output_json={out}")
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 3  # carry, reset, naive
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["mae"])
               for r in rows)


def test_resume_and_evaluate_read_the_resolved_columns(tmp_path):
    t = np.arange(120)
    columns = {"day": t, "a": np.sin(t / 5).round(4),
               "b": np.cos(t / 7).round(4)}

    def write_csv(order):
        lines = [",".join(order)] + [
            ",".join(str(columns[c][i]) for c in order) for i in t]
        return write(tmp_path / "d.csv", "\n".join(lines) + "\n")

    write_csv(["day", "a", "b"])
    data_config = DataConfig(task="csv", seq_len=5, batch_size=2,
                             csv_file=str(tmp_path / "d.csv"),
                             time_column="day", target_columns=("b",))
    config = TrainConfig(model_dir=str(tmp_path / "run"),
                         model=ModelConfig(units=8), data=data_config,
                         train_steps=2, log_every=1, checkpoint_every=2)
    trainer.train(config, out=io.StringIO())
    saved = config_lib.load(config.model_dir)
    assert saved.data.input_columns == ("a", "b")

    def evaluate():
        ev = evaluation.Evaluator(config.model_dir)
        path = checkpoints.latest_checkpoint(config.model_dir)
        return ev.evaluate_checkpoint(path, "carry", write_summaries=False)

    before = evaluate()[0]
    # Another column order and a new numeric column: the same columns are
    # read, by name, in the order of training.
    columns["c"] = t * 2.0
    write_csv(["c", "b", "day", "a"])
    after = evaluate()[0]
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-6)
    # Resuming with the flags of the first run reads the same columns too.
    resumed = trainer.train(
        TrainConfig(**{**config_lib.to_dict(config), "model": config.model,
                       "data": data_config, "train_steps": 4}),
        out=io.StringIO())
    assert resumed["steps_run"] == 2
    # A config.json written before the columns were recorded still resumes.
    old = config_lib.to_dict(config_lib.load(config.model_dir))
    old["data"]["input_columns"] = []
    config_lib.save(config_lib.from_dict(old), config.model_dir)
    write_csv(["day", "a", "b"])
    resumed = trainer.train(
        TrainConfig(**{**config_lib.to_dict(config), "model": config.model,
                       "data": data_config, "train_steps": 6}),
        out=io.StringIO())
    assert resumed["steps_run"] == 2
    columns["c"] = t * 2.0
    # Without a column the model was trained on: refused, with a message.
    del columns["a"]
    write_csv(["b", "day", "c"])
    with pytest.raises(ValueError, match=r"has no column\(s\) \['a'\] "
                                         r"\(--input_columns\)"):
        evaluate()
