"""Reliability: non-finite losses, corrupt checkpoints, bad data, and no
pickle in the entry points or any loading path. (Kill -9 and SIGTERM:
e2e/test_kill.py.)"""

import dataclasses
import io
import pathlib
import pickle

import numpy as np
import pytest

from lstm_ctl import config as config_lib
from lstm_ctl.run import checkpoints
from lstm_ctl.eval import engine as evaluation
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig
from helpers import NaNAt, scalars, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def config(tmp_path, name="run", **kwargs):
    values = dict(train_steps=6, log_every=1, hist_every=1,
                  checkpoint_every=2)
    values.update(kwargs)
    return tiny_config(tmp_path, name, **values)


def test_nan_loss_stops_with_the_step_and_the_last_good_checkpoint(tmp_path):
    t = trainer.Trainer(config(tmp_path), out=io.StringIO())
    t.iterator = NaNAt(t.iterator, step=3)
    with pytest.raises(trainer.TrainingError,
                       match=r"non-finite loss \(nan\) at step 3: its update "
                             r"was not applied and training stopped. Last "
                             r"good checkpoint: .*ckpt-2 \(no checkpoint of "
                             r"step 3 was written"):
        t.run()
    assert checkpoints.checkpoint_step(
        checkpoints.latest_checkpoint(t.model_dir)) == 2
    for w in t.model.weights:
        assert np.isfinite(np.asarray(w)).all()


def test_skip_nonfinite_skips_the_step_and_counts_it(tmp_path):
    cfg = config(tmp_path, skip_nonfinite=True)
    reference = trainer.Trainer(config(tmp_path, "ref"), out=io.StringIO())
    t = trainer.Trainer(cfg, out=io.StringIO())
    t.iterator = NaNAt(t.iterator, step=3)
    expected = reference.run()["losses"]
    result = t.run()
    losses = result["losses"]
    assert np.isnan(losses[2]) and np.isfinite(np.delete(losses, 2)).all()
    np.testing.assert_array_equal(losses[:2], expected[:2])
    assert result["nonfinite_steps"] == 1 and int(t.skipped) == 1
    for w in t.model.weights:
        assert np.isfinite(np.asarray(w)).all()
    counts = {step: int(v) for step, v in
              scalars(tmp_path / "run", "nonfinite_steps").items()}
    assert counts[2] == 0 and counts[3] == 1 and counts[6] == 1
    # The count survives a resume.
    resumed = trainer.Trainer(config(tmp_path, skip_nonfinite=True,
                                     train_steps=8), out=io.StringIO())
    assert resumed.run()["nonfinite_steps"] == 1


def test_skipped_step_under_two_replicas(tmp_path):
    cfg = config(tmp_path, skip_nonfinite=True, strategy="mirrored",
                 cpu_replicas=2, train_steps=4)
    t = trainer.Trainer(cfg, out=io.StringIO())
    t.iterator = NaNAt(t.iterator, step=2)
    result = t.run()
    assert result["nonfinite_steps"] == 1
    assert np.isfinite(np.delete(result["losses"], 1)).all()


def corrupt(path):
    """Overwrites the middle of the checkpoint's data file: the weights
    and the data iterator's state (the evaluator reads only the first)."""
    data = pathlib.Path(str(path) + ".data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    a, b = len(raw) // 10, len(raw) * 9 // 10
    raw[a:b] = b"\xff" * (b - a)
    data.write_bytes(bytes(raw))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path,
                                                              capsys):
    cfg = config(tmp_path, train_steps=4)
    trainer.train(cfg, out=io.StringIO())
    latest = checkpoints.latest_checkpoint(cfg.model_dir)
    assert latest.endswith("ckpt-4")
    corrupt(latest)
    t = trainer.Trainer(cfg, out=io.StringIO())
    assert t.restore().endswith("ckpt-2") and int(t.step) == 2
    warning = capsys.readouterr().err
    assert f"Warning: checkpoint {latest} cannot be read" in warning
    assert "falling back to the one before it" in warning
    ev = evaluation.Evaluator(cfg.model_dir)
    assert ev.restore_latest(lambda line: None).endswith("ckpt-2")
    with pytest.raises(checkpoints.CheckpointError, match="cannot be read"):
        ev.restore(latest)
    # Resuming re-trains steps 3-4 and writes a good ckpt-4 again.
    assert t.run()["steps_run"] == 2
    capsys.readouterr()
    assert trainer.Trainer(cfg, out=io.StringIO()).restore().endswith(
        "ckpt-4")  # the rewritten ckpt-4 reads cleanly
    assert "cannot be read" not in capsys.readouterr().err


def test_every_checkpoint_corrupt_is_a_clear_error(tmp_path):
    cfg = config(tmp_path, train_steps=4)
    trainer.train(cfg, out=io.StringIO())
    for path in checkpoints.list_checkpoints(cfg.model_dir):
        corrupt(path)
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"none of the 2 checkpoints in .* can be read"):
        trainer.Trainer(cfg, out=io.StringIO()).restore()
    (tmp_path / "run" / "checkpoint").write_text("model_checkpoint_path: [")
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"checkpoint index .* cannot be parsed"):
        checkpoints.list_checkpoints(cfg.model_dir)


def test_no_pickle_in_the_entry_points_or_any_loading_path(tmp_path,
                                                           monkeypatch):
    for path in [ROOT / "train.py", ROOT / "evaluate.py",
                 *(ROOT / "lstm_ctl").glob("*.py")]:
        source = path.read_text()
        assert "pickle" not in source and "allow_pickle" not in source, path
    text = tmp_path / "t.txt"
    text.write_text("abcab cabd " * 40)
    run = config(tmp_path, data=DataConfig(task="text", seq_len=5,
                                           batch_size=2, text_file=str(text)),
                 train_steps=2, checkpoint_every=1, hist_every=100)
    trainer.train(run, out=io.StringIO())

    def refuse(*args, **kwargs):
        raise AssertionError("a loading path unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    real_np_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: real_np_load(
        *a, **dict(k, allow_pickle=False)))
    # Everything a resume and an evaluation read back.
    config_lib.load(run.model_dir)
    assert trainer.train(dataclasses.replace(run, train_steps=3),
                         out=io.StringIO())["steps_run"] == 1
    ev = evaluation.Evaluator(run.model_dir)
    path = ev.restore_latest(lambda line: None)
    assert ev.evaluate_checkpoint(path, "carry", write_summaries=False)
