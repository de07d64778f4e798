"""Evaluation: numbers from checkpoints, eval summaries, errors, sampling."""

import csv
import dataclasses
import io
import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator)
from tensorboard.util import tensor_util

from lstm_ctl import config as config_lib
from lstm_ctl.run import checkpoints
from lstm_ctl.data import tasks as data
from lstm_ctl.eval import engine as evaluation
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
from helpers import run_main, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("eval") / "run"
    config = tiny_config(model_dir.parent, model_dir.name, train_steps=60,
                         log_every=20, hist_every=100, checkpoint_every=20)
    trainer.train(config, out=io.StringIO())
    return str(model_dir)


def read_predictions(path):
    """`{stream: (times, actual, carry, reset)}` of a predictions CSV (one
    target column)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        times, *columns = out.setdefault(r["stream"], ([], [], [], []))
        times.append(int(r["time"]))
        for values, key in zip(columns, ("actual", "predicted_carry",
                                         "predicted_reset")):
            values.append(float(r[key]))
    return {k: tuple(np.array(v) for v in vs) for k, vs in out.items()}


def test_warmup_none_scores_the_predictions_that_the_csv_and_figure_show(
        run_dir, tmp_path, monkeypatch):
    # One engine: with warmup="none" too, the scores, the predictions CSV
    # and the figure come from the same per-stream predictions.
    shown = {}
    figure_png = evaluation.report.figure_png

    def spy(task, series, carry, reset, *args, **kwargs):
        shown.update(carry=carry, reset=reset)
        return figure_png(task, series, carry, reset, *args, **kwargs)

    monkeypatch.setattr(evaluation.report, "figure_png", spy)
    ev = evaluation.Evaluator(run_dir, warmup="none")
    path = checkpoints.latest_checkpoint(run_dir)
    rows = ev.evaluate_checkpoint(path, "both", eval_steps=12,
                                  write_summaries=False)
    carry, reset, naive = rows
    assert [r["state_mode"] for r in rows] == ["carry", "reset", "naive"]
    csv_path = tmp_path / "predictions.csv"
    ev.write_outputs(predictions_csv=str(csv_path))
    written = read_predictions(csv_path)

    # The scored data are sine's eval data, which the CSV shows: the
    # second half of each eval signal, its first 12 chunks.
    config, seq = ev.config, ev.config.data.seq_len
    steps = 12 * seq
    _, signals = data.eval_series(config.data, run_dir)
    assert len(signals) == config.data.batch_size
    assert sorted(written) == sorted(s.name for s in signals)
    for s in signals:
        times, actual, _, _ = written[s.name]
        a = len(s.targets) // 2
        np.testing.assert_array_equal(times, np.arange(a, a + steps))
        np.testing.assert_allclose(actual, s.targets[a:a + steps, 0],
                                   rtol=1e-6)

    # The scores are those of the CSV's predictions.
    actual = np.concatenate([written[s.name][1] for s in signals])
    for row, k in ((carry, 2), (reset, 3)):
        predicted = np.concatenate([written[s.name][k] for s in signals])
        mse = ((predicted - actual) ** 2).mean()
        assert row["loss"] == pytest.approx(mse, rel=2e-5)
        assert row["rmse"] == pytest.approx(np.sqrt(mse), rel=2e-5)
    assert abs(reset["loss"] - carry["loss"]) > 1e-4 * carry["loss"]
    # Naive: each row predicted by the one before it (the history's last).
    last = np.concatenate([s.targets[len(s.targets) // 2 - 1:][:steps, 0]
                           for s in signals])
    assert naive["loss"] == pytest.approx(((last - actual) ** 2).mean(),
                                          rel=2e-5)

    # They are the model itself over each stream's hold-out: carry in one
    # call from the initial state, reset every chunk from it; and the
    # figure draws them.
    for i, s in enumerate(signals):
        a = len(s.targets) // 2
        x = s.inputs[a - 1:a - 1 + steps]
        out, _ = ev.model(x[None])
        chunks, _ = ev.model(x.reshape(-1, seq, x.shape[-1]))
        for predicted, model_out, k in (
                (shown["carry"][i], out, 2), (shown["reset"][i], chunks, 3)):
            expected = np.asarray(model_out).reshape(steps, -1)
            np.testing.assert_allclose(predicted, expected, rtol=1e-5,
                                       atol=1e-6)
            np.testing.assert_allclose(written[s.name][k], expected[:, 0],
                                       rtol=1e-5, atol=1e-6)
    # One compiled forward pass: carry, reset and a second checkpoint
    # (other batch sizes and lengths) do not retrace it.
    first = ev.evaluate_checkpoint(checkpoints.list_checkpoints(run_dir)[0],
                                   "both", eval_steps=1,
                                   write_summaries=False)
    assert ev.trace_count == 1
    # One chunk from the initial state: carry and reset are the same
    # computation (evaluate.py says so).
    assert ev.carry_is_reset(1) and not ev.carry_is_reset(12)
    assert first[0]["loss"] == pytest.approx(first[1]["loss"], rel=1e-6)


def test_evaluate_all_writes_one_point_per_checkpoint_at_its_step(run_dir,
                                                                  tmp_path):
    out_json = tmp_path / "rows.json"
    result = run_main("evaluate.py", f"--model_dir={run_dir}", "--all",
                      "--warmup=none", "--state_mode=both", "--eval_steps=20",
                      f"--output_json={out_json}")
    assert result.returncode == 0, result.stderr
    assert "reset - carry" in result.stdout
    rows = json.loads(out_json.read_text())["rows"]
    steps = [checkpoints.checkpoint_step(p)
             for p in checkpoints.list_checkpoints(run_dir)]
    assert steps == [20, 40, 60]
    assert [(r["step"], r["state_mode"]) for r in rows] == [
        (s, m) for s in steps for m in ("carry", "reset", "naive")]
    for mode in ("carry", "reset", "naive"):
        acc = EventAccumulator(os.path.join(run_dir, "eval", "none", mode),
                               size_guidance={"tensors": 0})
        acc.Reload()
        events = acc.Tensors("loss")
        assert [e.step for e in events] == steps
        losses = [float(tensor_util.make_ndarray(e.tensor_proto))
                  for e in events]
        expected = [r["loss"] for r in rows if r["state_mode"] == mode]
        np.testing.assert_allclose(losses, expected, rtol=1e-6)
        assert "rmse" in acc.Tags()["tensors"]


def test_watch_evaluates_checkpoints_as_they_appear(run_dir, tmp_path):
    seen = list(evaluation.watch(run_dir, timeout=0.5, poll_seconds=0.1))
    assert seen == checkpoints.list_checkpoints(run_dir)
    assert list(evaluation.watch(run_dir, timeout=0.2, poll_seconds=0.1,
                                 seen=seen)) == []


def test_errors_for_a_dir_without_config_or_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        evaluation.Evaluator(str(tmp_path))
    config_lib.save(TrainConfig(model_dir=str(tmp_path),
                                data=DataConfig(batch_size=2)), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*train "
                                                "first"):
        checkpoints.require_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        evaluation.all_checkpoints(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="checkpoint '/no/ckpt-1' not "
                                                "found"):
        checkpoints.require_checkpoint(str(tmp_path), "/no/ckpt-1")
    result = run_main("evaluate.py", f"--model_dir={tmp_path / 'missing'}")
    assert result.returncode == 1
    assert "evaluate.py: error:" in result.stderr
    assert "config.json not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_checkpoint_of_another_architecture_is_a_clear_error(run_dir,
                                                             tmp_path):
    other = tmp_path / "other"
    config = config_lib.load(run_dir)
    bigger = config_lib.TrainConfig(
        **{**config_lib.to_dict(config), "model": ModelConfig(units=32),
           "data": config.data, "model_dir": str(other)})
    config_lib.save(bigger, str(other))
    ev = evaluation.Evaluator(str(other))
    with pytest.raises(ValueError, match="does not match the model described "
                                         "by"):
        ev.restore(checkpoints.latest_checkpoint(run_dir))


def test_text_sampling_with_step(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc abc abd " * 50)
    config = TrainConfig(model_dir=str(tmp_path / "run"),
                         model=ModelConfig(units=8),
                         data=DataConfig(task="text", seq_len=5, batch_size=2,
                                         text_file=str(text)),
                         train_steps=2, log_every=1)
    trainer.train(config, out=io.StringIO())
    ev = evaluation.Evaluator(config.model_dir)
    ev.restore(checkpoints.latest_checkpoint(config.model_dir))
    sample = evaluation.sample_text(ev.model, ev.task, "ab", 30, 0.8, seed=1)
    assert len(sample) == 30 and set(sample) <= set("abcd ")
    assert sample == evaluation.sample_text(ev.model, ev.task, "ab", 30, 0.8,
                                            seed=1)
    # A near-zero temperature picks the most likely next character.
    greedy = evaluation.sample_text(ev.model, ev.task, "ab", 1, 1e-4)
    ids = [ev.task.vocab.index("a"), ev.task.vocab.index("b")]
    logits, _ = ev.model(tf.one_hot([ids], len(ev.task.vocab)))
    assert greedy == ev.task.vocab[int(np.argmax(logits[0, -1]))]
    with pytest.raises(ValueError, match=r"not in the model's vocabulary: "
                                         r"\['z'\]"):
        evaluation.sample_text(ev.model, ev.task, "z", 5)


def test_relative_model_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(model_dir="runs/rel", model=ModelConfig(units=8),
                         data=DataConfig(seq_len=5, batch_size=2),
                         train_steps=2, checkpoint_every=1, log_every=1)
    trainer.train(config, out=io.StringIO())
    paths = evaluation.all_checkpoints("runs/rel")
    assert paths == ["runs/rel/ckpt-1", "runs/rel/ckpt-2"]
    ev = evaluation.Evaluator("runs/rel")
    rows = [ev.evaluate_checkpoint(p, "carry", eval_steps=2,
                                   write_summaries=False)[0] for p in paths]
    assert [r["step"] for r in rows] == [1, 2]


def test_a_run_validated_on_its_history_is_evaluated_at_its_best_checkpoint(
        tmp_path, make_run_dir):
    """By default evaluate.py scores the best checkpoint of a run validated
    on its history (chosen without the hold-out), else the latest."""
    run = make_run_dir(tmp_path / "run", step=7)
    make_run_dir(tmp_path / "run" / "best", seed=2, step=3)
    best = os.path.join(run, "best", "ckpt-3")

    def default(validate_on):
        config = config_lib.load(run)
        config_lib.save(dataclasses.replace(config, validate_on=validate_on),
                        run)
        path = evaluation.Evaluator(run).restore_default(print)
        result = run_main("evaluate.py", f"--model_dir={run}")
        assert result.returncode == 0, result.stderr
        return path, result.stdout

    path, out = default("history")
    assert path == best and best in out
    path, out = default("holdout")
    assert path == os.path.join(run, "ckpt-7") and best not in out
