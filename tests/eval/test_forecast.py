"""Warm-up over the history, predictions CSV, forecasts, pictures."""

import csv
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
from lstm_ctl.eval import engine as evaluation
from lstm_ctl.train import trainer
from lstm_ctl.run.builders import build_model
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
from helpers import run_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(model_dir, data, steps=20, units=8, lr_schedule="constant"):
    config = TrainConfig(model_dir=str(model_dir),
                         model=ModelConfig(units=units), data=data,
                         train_steps=steps, log_every=10,
                         checkpoint_every=steps, lr_schedule=lr_schedule)
    trainer.train(config, out=io.StringIO())
    return str(model_dir)


def _evaluate(*args):
    return run_main("evaluate.py", *args)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def sine_dir(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("sine") / "run",
                  DataConfig(seq_len=10, batch_size=3), steps=30)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    """Columns a, b, c; targets b, a, c (another order than the inputs)."""
    tmp = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(0)
    t = np.arange(240)
    raw = np.stack([10 + 3 * np.sin(t / 7), 100 + 20 * np.cos(t / 11),
                    rng.normal(5, 2, t.size)], 1).round(3)
    path = tmp / "load.csv"
    path.write_text("a,b,c\n" + "".join(
        ",".join(f"{v:g}" for v in row) + "\n" for row in raw))
    run = _train(tmp / "run", DataConfig(
        task="csv", csv_file=str(path), target_columns=("b", "a", "c"),
        seq_len=8, batch_size=2))
    return run, raw


def _restored(model_dir, **kwargs):
    ev = evaluation.Evaluator(model_dir, **kwargs)
    ev.restore(checkpoints.latest_checkpoint(model_dir))
    return ev


def test_warm_up_state_and_carry_numbers_equal_a_hand_run(sine_dir):
    ev = _restored(sine_dir, warmup="history")
    series, seq = ev.series, ev.config.data.seq_len
    assert len(series) == 3 and len({len(s.inputs) for s in series}) == 3
    state = ev.forecaster.warm_up(series)
    sq_carry, sq_reset, count = 0.0, 0.0, 0
    for i, s in enumerate(series):
        cut, length = len(s.inputs) // 2, len(s.inputs)
        # By hand, one stream alone: its history, then its hold-out.
        _, hand = ev.model(s.inputs[None, :cut - 1])
        for layer, hand_layer in zip(state, hand):
            np.testing.assert_allclose(layer.h[i], hand_layer.h[0], atol=1e-5)
            np.testing.assert_allclose(layer.c[i], hand_layer.c[0], atol=1e-5)
        out, _ = ev.model(s.inputs[None, cut - 1:length - 1],
                          initial_state=hand)
        sq_carry += ((out[0].numpy() - s.inputs[cut:]) ** 2).sum()
        for k in range(cut - 1, length - 1, seq):  # every chunk from zeros
            chunk, _ = ev.model(s.inputs[None, k:min(k + seq, length - 1)])
            sq_reset += ((chunk[0].numpy() - s.inputs[k + 1:k + 1 + seq])
                         ** 2).sum()
        count += length - cut
    rows = ev.evaluate_checkpoint(checkpoints.latest_checkpoint(sine_dir),
                                  write_summaries=False, restore=False)
    carry, reset = rows[:2]
    assert carry["loss"] == pytest.approx(sq_carry / count, rel=1e-5)
    assert reset["loss"] == pytest.approx(sq_reset / count, rel=1e-5)
    # Warming up changes the numbers: the hold-out from the initial state.
    cold = _restored(sine_dir, warmup="none").predictions()[0]
    warm = ev.predictions()[0]
    assert np.abs(cold[0][:5] - warm[0][:5]).max() > 1e-3


def _independent_predictions(model_dir, raw):
    """The model over the whole file (normalised by hand), de-normalised by
    hand: row r + 1's prediction is out[r]."""
    config = config_lib.load(model_dir)
    norm = json.loads((pathlib.Path(model_dir) /
                       "normalization.json").read_text())
    mean, std = np.array(norm["mean"]), np.array(norm["std"])
    model = build_model(config, type("T", (), {"output_dim": 3,
                                               "input_dim": 3})())
    checkpoints.restore_model(model, checkpoints.latest_checkpoint(model_dir))
    scaled = ((raw - mean) / std).astype(np.float32)
    out, state = model(scaled[None, :-1])
    order = [1, 0, 2]  # targets b, a, c
    return model, out[0].numpy() * std[order] + mean[order], scaled, state


def test_predictions_forecast_csvs_images_and_plot(csv_dir, tmp_path):
    run, raw = csv_dir
    pred, fc, png = (tmp_path / "pred.csv", tmp_path / "fc.csv",
                     tmp_path / "fig.png")
    result = _evaluate(f"--model_dir={run}", f"--predictions_csv={pred}",
                       "--forecast=4", f"--forecast_csv={fc}",
                       f"--plot={png}", f"--output_json={tmp_path / 'o.json'}")
    assert result.returncode == 0, result.stderr
    length = len(raw)
    cut = length - max(1, int(length * 0.1))  # the last 10% held out
    _, expected, _, _ = _independent_predictions(run, raw)

    rows = _read_csv(pred)
    assert rows[0] == ["stream", "time", "column", "actual",
                       "predicted_carry", "predicted_reset"]
    rows = rows[1:]
    assert len(rows) == (length - cut) * 3
    for k, (stream, time, column, actual, carry, _) in enumerate(rows):
        r, c = cut + k // 3, ["b", "a", "c"].index(column)
        assert (stream, int(time), column) == ("load.csv", r,
                                               ["b", "a", "c"][k % 3])
        assert float(actual) == pytest.approx(raw[r, [1, 0, 2][c]],
                                              rel=1e-6, abs=1e-5)
        assert float(carry) == pytest.approx(expected[r - 1, c], rel=1e-5,
                                             abs=1e-5)

    fc_rows = _read_csv(fc)
    assert fc_rows[0] == ["stream", "step", "time", "column",
                          "future_forecast"]
    # The steps after the whole file: rows length .. length + 3 (the time
    # of a file without a time column is the row index).
    assert [(int(s), int(t), c) for _, s, t, c, _ in fc_rows[1:]] == [
        (h, length - 1 + h, c) for h in range(1, 5) for c in ("b", "a", "c")]

    skill = [r for r in json.loads((tmp_path / "o.json").read_text())["rows"]
             if "horizon" in r]
    assert [r["state_mode"] for r in skill] == [
        "holdout_forecast_carry", "holdout_forecast_reset",
        "holdout_forecast_naive"]
    # Naive: the last history row repeated, against hold-out rows, by hand.
    naive = raw[cut - 1][[1, 0, 2]]
    truth = raw[cut:cut + 4][:, [1, 0, 2]]
    assert skill[2]["rmse"] == pytest.approx(
        np.sqrt(((truth - naive) ** 2).mean()), rel=1e-5)

    assert png.read_bytes()[:8] == PNG_MAGIC
    assert tf.io.decode_png(png.read_bytes()).shape[-1] in (3, 4)
    acc = EventAccumulator(os.path.join(run, "eval", "history"),
                           size_guidance={"tensors": 0})
    acc.Reload()
    events = acc.Tensors("predictions")
    assert [e.step for e in events] == [20]
    width, height, encoded = tensor_util.make_ndarray(events[0].tensor_proto)
    image = tf.io.decode_png(encoded)
    assert image.shape[:2] == (int(height), int(width))


def test_forecast_equals_a_step_loop_fed_its_own_predictions(csv_dir):
    run, raw = csv_dir
    ev = _restored(run)
    model, _, scaled, state = _independent_predictions(run, raw)
    norm = json.loads((pathlib.Path(run) / "normalization.json").read_text())
    mean, std = np.array(norm["mean"]), np.array(norm["std"])

    def step_loop(state, x, steps):
        hand = []
        for _ in range(steps):
            y, state = model.step(x[None], state)
            y = y.numpy()[0]                      # order b, a, c
            hand.append(y * std[[1, 0, 2]] + mean[[1, 0, 2]])
            x = y[[1, 0, 2]]                      # back to a, b, c
        return np.array(hand)

    values = ev.forecaster.forecast(ev.series, 6)
    assert values.shape == (1, 6, 3)
    tol = dict(rtol=1e-5, atol=1e-5 * std.max())
    np.testing.assert_allclose(values[0], step_loop(state, scaled[-1], 6),
                               **tol)
    # On the hold-out, from the end of the history: carry from the state of
    # the whole history, reset from the last seq_len rows alone.
    cut, seq = ev.series[0].cut, ev.config.data.seq_len
    _, paths = ev.forecaster.skill(ev.series, 5)
    _, history = model(scaled[None, :cut - 1])
    np.testing.assert_allclose(paths["holdout_forecast_carry"][0],
                               step_loop(history, scaled[cut - 1], 5), **tol)
    _, short = model(scaled[None, cut - seq:cut - 1])
    np.testing.assert_allclose(paths["holdout_forecast_reset"][0],
                               step_loop(short, scaled[cut - 1], 5), **tol)
    # Data units: the forecast of b lives near b's scale, not near 0.
    assert abs(values[0, 0, 0] - raw[:, 1].mean()) < 3 * raw[:, 1].std()


def test_forecast_needs_every_input_to_be_a_target(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,hour\n" + "".join(
        f"{i % 5},{i % 3},{i % 24}\n" for i in range(120)))
    run = _train(tmp_path / "run", DataConfig(
        task="csv", csv_file=str(path), target_columns=("a", "b"), seq_len=5,
        batch_size=2), steps=2)
    before = sorted(os.listdir(run))
    result = _evaluate(f"--model_dir={run}", "--forecast=3")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines()
             if "evaluate.py: error:" in line]
    assert len(lines) == 1
    assert lines[0].startswith("evaluate.py: error: --forecast")
    assert "['hour']" in lines[0] and "no future" in lines[0]
    assert sorted(os.listdir(run)) == before
    result = _evaluate(f"--model_dir={run}", "--forecast_csv=f.csv")
    assert result.returncode == 1
    assert "--forecast_csv needs --forecast=H" in result.stderr
    assert not (ROOT / "f.csv").exists()


def test_text_predictions_are_characters_and_argmax(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc, abd\n" * 30)
    run = _train(tmp_path / "run", DataConfig(
        task="text", text_file=str(text), seq_len=5, batch_size=2), steps=5)
    ev = _restored(run)
    assert ev.warmup == "history"
    ev.evaluate_checkpoint(checkpoints.latest_checkpoint(run),
                           write_summaries=False, restore=False)
    ev.write_outputs(predictions_csv=str(tmp_path / "p.csv"))
    rows = _read_csv(tmp_path / "p.csv")[1:]
    body = text.read_text()
    cut = len(body) - max(1, int(len(body) * 0.1))
    vocab = ev.task.vocab
    logits, _ = ev.model(tf.one_hot([[vocab.index(ch) for ch in body[:-1]]],
                                    len(vocab)))
    assert [r[3] for r in rows] == list(body[cut:])
    assert [int(r[1]) for r in rows] == list(range(cut, len(body)))
    assert [r[4] for r in rows] == [
        vocab[i] for i in np.argmax(logits[0, cut - 1:], -1)]
    # Forecast: greedy characters from the state after the whole text.
    ev.horizon = 8
    ev.write_outputs(forecast_csv=str(tmp_path / "f.csv"))
    _, state = ev.model(tf.one_hot([[vocab.index(ch) for ch in body[:-1]]],
                                   len(vocab)))
    x, greedy = body[-1], []
    for _ in range(8):
        y, state = ev.model.step(tf.one_hot([vocab.index(x)], len(vocab)),
                                 state)
        x = vocab[int(np.argmax(y[0]))]
        greedy.append(x)
    assert _read_csv(tmp_path / "f.csv")[1:] == [
        ["t.txt", str(h + 1), str(len(body) + h), "char", ch]
        for h, ch in enumerate(greedy)]


def test_forecast_from_the_carried_state_beats_the_naive_one(tmp_path):
    run = _train(tmp_path / "run", DataConfig(seq_len=20, batch_size=16),
                 steps=120, units=32, lr_schedule="cosine")
    ev = _restored(run, horizon=20)
    rows = ev.evaluate_checkpoint(checkpoints.latest_checkpoint(run),
                                  write_summaries=False, restore=False)
    rmse = {r["state_mode"]: r["rmse"] for r in rows if "horizon" in r}
    assert rmse["holdout_forecast_carry"] < rmse["holdout_forecast_naive"]
