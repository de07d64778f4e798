"""train.py as a user runs it: flags, each task end to end, and a real
TensorBoard server reading the run. (Stop and resume: test_faults.py.)"""

import pathlib

import numpy as np
import pytest

from helpers import run_main

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--units=8", "--seq_len=5", "--batch_size=2", "--train_steps=4",
        "--log_every=1", "--hist_every=2", "--checkpoint_every=2"]


def train(*args, timeout=None):
    return run_main("train.py", *args)


@pytest.mark.parametrize("args, message", [
    (["--dropout=1.5"], "--dropout must be in [0, 1)"),
    (["--batch_size=0"], "--batch_size must be >= 1 (got 0)"),
    (["--state_mode=keep"],
     "--state_mode must be one of carry, reset, stored, windows (got "
     "'keep')"),
    (["--task=text"], "--task=text needs --text_file=PATH"),
    (["--task=text", "--text_file=/nonexistent"],
     "--text_file '/nonexistent' does not exist."),
    (["--task=csv", "--csv_file=x.csv"], "--task=csv needs --target_columns"),
    (["--learning_rate=0"], "--learning_rate must be > 0"),
    (["--cpu_replicas=2"], "--cpu_replicas needs --strategy=mirrored"),
    (["--strategy=mirrored", "--cpu_replicas=3", "--batch_size=8"],
     "--batch_size=8 (the global batch) is not divisible by the 3 "
     "replicas"),
])
def test_bad_flags_stop_before_any_work(tmp_path, args, message):
    model_dir = tmp_path / "never"
    result = train(f"--model_dir={model_dir}", *args, timeout=30)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert not model_dir.exists()


def test_text_end_to_end(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world, the state carries on. " * 40)
    model_dir = tmp_path / "text"
    result = train(f"--model_dir={model_dir}", "--task=text",
                   f"--text_file={text}", *TINY)
    assert result.returncode == 0, result.stderr
    assert "bpc" in result.stdout and "unigram baseline" in result.stdout
    assert (model_dir / "vocab.json").exists()
    assert (model_dir / "ckpt-4.index").exists()


def test_csv_end_to_end(tmp_path):
    csv = tmp_path / "d.csv"
    rows = ["temp,load,hour"] + [
        f"{np.sin(i / 8):.3f},{np.cos(i / 5):.3f},{i % 24}" for i in range(400)]
    csv.write_text("\n".join(rows) + "\n")
    model_dir = tmp_path / "csv"
    result = train(f"--model_dir={model_dir}", "--task=csv",
                   f"--csv_file={csv}", "--target_columns=temp,load",
                   "--ensemble=1", *TINY)
    assert result.returncode == 0, result.stderr
    assert "mae" in result.stdout
    assert (model_dir / "normalization.json").exists()
    # A bad target column is a clear error, not a traceback.
    bad = train(f"--model_dir={tmp_path / 'bad'}", "--task=csv",
                f"--csv_file={csv}", "--target_columns=pressure", *TINY)
    assert bad.returncode != 0
    assert "train.py: error: --csv_file" in bad.stderr
    assert "has no column(s) ['pressure']" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()   # stopped before any work
