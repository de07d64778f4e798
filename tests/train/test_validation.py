"""Validation during training: held-out scores at each evaluation, the best
checkpoint kept apart from the latest ones (max_to_keep never deletes it),
early stopping, and what a resumed or finished run does with them."""

import io
import json
import os

import pytest

from helpers import frozen_trainer, scalars, tiny_config
from lstm_ctl.eval import engine as evaluation
from lstm_ctl.run import checkpoints
from lstm_ctl.train import trainer, validation


def tiny(tmp_path, **kwargs):
    values = dict(train_steps=12, log_every=2, hist_every=100,
                  checkpoint_every=2, max_to_keep=1)
    values.update(kwargs)
    return tiny_config(tmp_path, **values)


def history(model_dir):
    with open(os.path.join(model_dir, validation.HISTORY_FILE)) as f:
        return json.load(f)


def test_best_checkpoint_survives_max_to_keep(tmp_path):
    # Frozen weights: every evaluation scores the same, so none improves on
    # the first and the best stays at step 2 while max_to_keep=1 deletes
    # ckpt-2 from the model dir.
    t = frozen_trainer(tiny(tmp_path))
    t.out = out = io.StringIO()
    result = t.run()
    model_dir = t.model_dir
    assert checkpoints.list_checkpoints(model_dir) == [
        os.path.join(model_dir, "ckpt-12")]
    best = checkpoints.best_checkpoint(model_dir)
    assert best == os.path.join(model_dir, "best", "ckpt-2")
    assert checkpoints.require_checkpoint(model_dir, "best") == best
    saved = history(model_dir)
    assert [h["step"] for h in saved["history"]] == [2, 4, 6, 8, 10, 12]
    assert saved["best"]["step"] == 2 and result["best"]["step"] == 2
    # The best holds the weights it was scored with.
    ev = evaluation.Evaluator(model_dir, warmup="history")
    rows = ev.evaluate_checkpoint(best, "both", write_summaries=False)
    assert rows[0]["loss"] == pytest.approx(saved["best"]["loss"], rel=1e-6)
    for row, mode in zip(rows, ("carry", "reset", "naive")):
        assert row["loss"] == pytest.approx(
            saved["history"][0][mode]["loss"], rel=1e-6)
    # Each evaluation is printed and logged under the eval runs.
    text = out.getvalue()
    assert text.count("held-out at step") == 6
    assert "Best: " + best in text
    logged = scalars(model_dir, "loss", run="eval/history/naive")
    assert sorted(logged) == [2, 4, 6, 8, 10, 12]
    assert "held-out carry loss" in text.splitlines()[-3]


def test_early_stopping_stops_after_p_evaluations_without_improvement(
        tmp_path):
    config = tiny(tmp_path, train_steps=40, early_stopping=2)
    t = frozen_trainer(config)
    t.out = out = io.StringIO()
    result = t.run()
    # Evaluations at 2 (the best), 4 and 6 (no improvement): stop at 6.
    assert result["step"] == 6 and result["early_stopped"]
    assert "Early stopping at step 6" in out.getvalue()
    assert checkpoints.latest_checkpoint(t.model_dir).endswith("ckpt-6")
    # Running it again does not train on.
    again = io.StringIO()
    result = trainer.train(config, out=again)
    assert result["step"] == 6
    assert "Stopped early before, at step 6" in again.getvalue()


def test_improvement_moves_the_best_and_validation_can_be_off(tmp_path):
    config = tiny(tmp_path, train_steps=8, learning_rate=0.01)
    result = trainer.train(config, out=io.StringIO())
    saved = history(config.model_dir)
    losses = [h["carry"]["loss"] for h in saved["history"]]
    assert saved["best"]["loss"] == min(losses)
    assert saved["best"]["step"] == saved["history"][losses.index(
        min(losses))]["step"]
    assert result["heldout"]["step"] == 8
    off = tiny(tmp_path, model_dir=str(tmp_path / "off"), eval_every=0)
    out = io.StringIO()
    result = trainer.train(off, out=out)
    assert "held-out" not in out.getvalue() and "heldout" not in result
    assert checkpoints.best_checkpoint(off.model_dir) is None


def test_eval_every_checks(tmp_path):
    from lstm_ctl import config as config_lib
    with pytest.raises(ValueError, match="early_stopping needs validation"):
        config_lib.validate(tiny(tmp_path, eval_every=0, early_stopping=3))
    with pytest.raises(ValueError, match="eval_every must be >= 0"):
        config_lib.validate(tiny(tmp_path, eval_every=-1))
    assert config_lib.eval_every(tiny(tmp_path)) == 2
    assert config_lib.eval_every(tiny(tmp_path, eval_every=5)) == 5
