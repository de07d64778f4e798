"""Evaluation promises against numbers the test computes itself: the
hold-out part of the data, bits per character, mae in data units, sampling
through `model.step`, and --watch with a training run going on beside it."""

import csv
import dataclasses
import io
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl.run import checkpoints
from lstm_ctl.data import tasks as data
from lstm_ctl.eval import engine as evaluation
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig

ATOL = 1e-5


def train_run(tmp_path, data_config, units=8, **kwargs):
    values = dict(model_dir=str(tmp_path / "run"),
                  model=ModelConfig(units=units), data=data_config,
                  train_steps=2, log_every=1, checkpoint_every=2,
                  lr_schedule="constant")
    values.update(kwargs)
    config = TrainConfig(**values)
    trainer.train(config, out=io.StringIO())
    return config


def randomize(model, seed=0, scale=0.8):
    """Weights far from a trained model's, so that inputs matter a lot."""
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(rng.normal(scale=scale, size=w.shape).astype("float32"))


def tail_length(n):
    """The README's hold-out: the last 10% of the file."""
    return max(1, int(n * 0.1))


def log_softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """Text whose first 90% uses a, b and space and whose last 10% uses c,
    d and space, so the hold-out cannot be mistaken for training text."""
    tmp_path = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    n = 1000
    cut = n - tail_length(n)
    text = "".join(rng.choice(list("ab "), size=cut)) + \
        "".join(rng.choice(list("cd "), size=n - cut))
    path = tmp_path / "t.txt"
    path.write_text(text)
    config = train_run(tmp_path, DataConfig(task="text", seq_len=9,
                                            batch_size=1, text_file=str(path)))
    ev = evaluation.Evaluator(config.model_dir)
    ev.restore(checkpoints.latest_checkpoint(config.model_dir))
    randomize(ev.model)
    return ev, text, cut


def test_text_eval_reads_the_tail_and_reports_bits_per_character(text_run):
    ev, text, cut = text_run
    assert ev.warmup == "history"     # the default for text
    vocab = json.loads(open(os.path.join(ev.model_dir, "vocab.json")).read())
    ids = np.array([vocab.index(ch) for ch in text])
    # One call over the whole file from the initial state (the history warms
    # the state up); scored: the predictions of the held-out characters only.
    x = np.eye(len(vocab), dtype="float32")[ids[:-1]][None]
    logits, _ = ev.model(x)
    nats = -log_softmax(np.asarray(logits[0], np.float64))[
        np.arange(cut - 1, len(ids) - 1), ids[cut:]].mean()
    row = ev.evaluate("carry")
    assert row["loss"] == pytest.approx(nats, rel=1e-4)
    assert row["bpc"] == pytest.approx(nats / math.log(2), rel=1e-4)


def test_sampling_goes_through_model_step(text_run, monkeypatch):
    ev = text_run[0]
    model, vocab = ev.model, ev.task.vocab
    forced = vocab.index("d")
    real_step = model.step

    def step_that_says_d(x_t, state):
        y_t, next_state = real_step(x_t, state)
        return tf.one_hot(tf.fill([tf.shape(y_t)[0]], forced),
                          len(vocab)) * 50.0, next_state

    monkeypatch.setattr(model, "step", step_that_says_d)
    sample = evaluation.sample_text(model, ev.task, "ab", 12, 1.0, seed=3)
    assert sample[1:] == "d" * 11     # the first comes from the prime


def test_sample_equals_sampling_from_whole_sequence_calls(text_run):
    ev = text_run[0]
    model, vocab = ev.model, ev.task.vocab
    sample = evaluation.sample_text(model, ev.task, "ab", 20, 1.0, seed=7)
    # Reference: the same draws (numpy's generator with the same seed), each
    # from a call on the whole text so far from the initial state: no state
    # carried by hand, no model.step.
    rng = np.random.default_rng(7)
    text = "ab"
    eye = np.eye(len(vocab), dtype="float32")
    for _ in range(20):
        logits, _ = model(eye[[vocab.index(ch) for ch in text]][None])
        p = np.exp(log_softmax(np.asarray(logits[0, -1], np.float64)))
        text += vocab[int(rng.choice(len(vocab), p=p / p.sum()))]
    assert sample == text[2:]
    assert len(set(sample)) >= 3     # a check that many characters pass


def test_csv_eval_reads_the_tail_and_reports_mae_in_data_units(tmp_path):
    rng = np.random.default_rng(1)
    n = 210
    cut = n - tail_length(n)
    values = rng.normal(size=(n, 2)) * [50.0, 20.0] + [10.0, -5.0]
    values[cut:] += [1000.0, 400.0]     # the hold-out is far from the rest
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["temp", "load"])
        w.writerows(values.round(4).tolist())
    values = values.round(4)
    config = train_run(tmp_path, DataConfig(
        task="csv", seq_len=5, batch_size=1, csv_file=str(path),
        target_columns=("load",)))
    ev = evaluation.Evaluator(config.model_dir)
    ev.restore(checkpoints.latest_checkpoint(config.model_dir))
    randomize(ev.model, scale=0.3)
    norm = json.loads(open(os.path.join(config.model_dir,
                                        "normalization.json")).read())
    mean, std = np.array(norm["mean"]), np.array(norm["std"])
    # The whole file from the initial state; scored: the held-out rows.
    pred, _ = ev.model(((values[:-1] - mean) / std).astype("float32")[None])
    pred = np.asarray(pred[0, cut - 1:, 0], np.float64)
    target = values[cut:, 1]
    mae_units = np.abs(pred * std[1] + mean[1] - target).mean()
    mse_normalised = ((pred - (target - mean[1]) / std[1]) ** 2).mean()
    row = ev.evaluate("carry")
    assert row["mae"] == pytest.approx(mae_units, rel=1e-4)
    assert row["loss"] == pytest.approx(mse_normalised, rel=1e-4)


def test_sine_eval_streams_are_not_the_training_streams(tmp_path):
    config = TrainConfig(model_dir=str(tmp_path),
                         data=DataConfig(seq_len=10, batch_size=4))
    _, train = data.build_task(config.data, "train")
    for seed in (0, 1):
        cfg = dataclasses.replace(config.data, seed=seed)
        _, held = data.build_task(cfg, "eval")
        _, other_train = data.build_task(cfg, "train")
        # No eval lane starts like any training lane of any of the seeds.
        for a in (train, other_train):
            for lane in held.inputs[:, :50, 0]:
                assert not any(np.allclose(lane, t[:50, 0], atol=1e-3)
                               for t in a.inputs)


# ------------------------------------------------------------------ watch
class BesideClock:
    """A fake clock for `evaluation.watch`: each sleep lets the training
    run beside it write its next checkpoints (no real waiting)."""

    def __init__(self, on_sleep):
        self.now, self.on_sleep, self.sleeps = 0.0, on_sleep, 0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.sleeps += 1
        self.on_sleep(self.sleeps)


def test_watch_follows_a_run_beside_it_and_skips_a_deleted_checkpoint(
        tmp_path, monkeypatch):
    # One trainer goes on beside the watcher, as a train.py process would
    # (one traced train step, not one per stretch of training).
    config = TrainConfig(model_dir=str(tmp_path / "run"),
                         model=ModelConfig(units=8),
                         data=DataConfig(seq_len=5, batch_size=2),
                         train_steps=2, log_every=1, checkpoint_every=2,
                         lr_schedule="constant", max_to_keep=2)
    run_beside = trainer.Trainer(config, out=io.StringIO())

    def train_to(steps):
        run_beside.config = dataclasses.replace(run_beside.config,
                                                train_steps=steps)
        assert run_beside.run()["step"] == steps

    train_to(2)

    def beside(sleeps):
        if sleeps == 1:       # two checkpoints while the watcher sleeps
            train_to(4)
            train_to(6)

    clock = BesideClock(beside)
    monkeypatch.setattr(evaluation, "time", clock)
    ev = evaluation.Evaluator(config.model_dir)
    evaluated, skipped, yielded = [], [], []
    for path in evaluation.watch(config.model_dir, timeout=5,
                                 poll_seconds=1):
        step = checkpoints.checkpoint_step(path)
        yielded.append(step)
        last_seen = clock.now
        if len(yielded) > 6:       # a watcher that yields again and again
            break
        if step == 4:
            # The run goes on while the watcher reads: max_to_keep=2
            # deletes ckpt-4 before it is restored.
            train_to(8)
            assert not os.path.exists(path + ".index")
        try:
            ev.evaluate_checkpoint(path, "carry", eval_steps=2,
                                   write_summaries=False)
            evaluated.append(step)
        except checkpoints.CheckpointError as e:   # what evaluate.py skips
            assert "cannot be read" in str(e)
            skipped.append(step)
    assert yielded == [2, 4, 6, 8]
    assert evaluated == [2, 6, 8] and skipped == [4]
    # It stopped once `timeout` seconds passed without a new checkpoint.
    assert 5 < clock.now - last_seen <= 6
