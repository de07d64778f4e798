"""Ctrl-C in the training loop, in process: the first SIGINT finishes the
step and writes its checkpoint; a second one stops at once and the last
complete checkpoint stays; a run in stored mode with burn-in stopped by
SIGTERM and resumed ends as an uninterrupted one. (Exit codes 130 and 143
of a real train.py process: e2e/test_signals_process.py, e2e/test_kill.py.)"""

import io
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl.run import checkpoints
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig, ModelConfig
from helpers import tiny_config


def config(tmp_path, **kwargs):
    values = dict(train_steps=20, log_every=1, hist_every=100,
                  checkpoint_every=2)
    values.update(kwargs)
    return tiny_config(tmp_path, **values)


class SignalAt:
    """Sends `count` SIGINTs (or `signum`s) to this process while batch
    `step` is fetched, as a user pressing Ctrl-C during that step would."""

    def __init__(self, iterator, step, count, signum=signal.SIGINT):
        self.iterator, self.step, self.count = iterator, step, count
        self.signum, self.fetched = signum, 0

    def __next__(self):
        self.fetched += 1
        if self.fetched == self.step:
            for _ in range(self.count):
                os.kill(os.getpid(), self.signum)
        return next(self.iterator)


def test_ctrl_c_finishes_the_step_and_checkpoints_it(tmp_path):
    out = io.StringIO()
    t = trainer.Trainer(config(tmp_path), out=out)
    t.iterator = SignalAt(t.iterator, step=5, count=1)
    handler = signal.getsignal(signal.SIGINT)
    try:
        result = t.run()
    except KeyboardInterrupt:
        pytest.fail("the first Ctrl-C stopped training at once")
    assert result["interrupted"] == signal.SIGINT and result["step"] == 5
    assert signal.getsignal(signal.SIGINT) is handler    # restored
    latest = checkpoints.latest_checkpoint(t.model_dir)
    assert latest.endswith("ckpt-5")
    assert f"Stopped by SIGINT at step 5: saved {latest}" in out.getvalue()
    # The checkpoint holds step 5's weights and carried state: a resumed
    # trainer starts exactly there.
    resumed = trainer.Trainer(config(tmp_path), out=io.StringIO())
    assert resumed.restore() == latest and int(resumed.step) == 5
    for a, b in zip(t.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.carried.read()[0].h,
                                  t.carried.read()[0].h)


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    t = trainer.Trainer(config(tmp_path), out=io.StringIO())
    t.iterator = SignalAt(t.iterator, step=5, count=2)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        t.run()
    assert signal.getsignal(signal.SIGINT) is handler
    # Step 5 was neither finished nor saved; ckpt-4 is the latest and reads.
    paths = checkpoints.list_checkpoints(t.model_dir)
    assert [checkpoints.checkpoint_step(p) for p in paths] == [2, 4]
    assert not tf.io.gfile.glob(os.path.join(t.model_dir, "ckpt-5*"))
    resumed = trainer.Trainer(config(tmp_path), out=io.StringIO())
    assert resumed.restore().endswith("ckpt-4") and int(resumed.step) == 4


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if name.startswith(("model/", "optimizer/", "stored_state/",
                                "step/"))}


def test_stored_mode_resumed_after_sigterm_equals_uninterrupted(tmp_path):
    """Stored state and burn-in through a SIGTERM: the resumed run ends
    with the same weights, optimizer and stored states as an uninterrupted
    one."""
    rng = np.random.default_rng(3)
    corpus = tmp_path / "t.txt"
    corpus.write_text("".join(rng.choice(list("abc de\n"), size=500)))

    def stored(name):
        return config(tmp_path, model_dir=str(tmp_path / name),
                      model=ModelConfig(units=16),
                      data=DataConfig(task="text", text_file=str(corpus),
                                      seq_len=5, batch_size=4),
                      state_mode="stored", burn_in=3, train_steps=40,
                      checkpoint_every=8, eval_every=0)

    assert trainer.train(stored("reference"),
                         out=io.StringIO())["steps_run"] == 40
    out = io.StringIO()
    t = trainer.Trainer(stored("stopped"), out=out)
    t.iterator = SignalAt(t.iterator, step=17, count=1,
                          signum=signal.SIGTERM)
    result = t.run()
    assert result["interrupted"] == signal.SIGTERM and result["step"] == 17
    steps = [line for line in out.getvalue().splitlines()
             if line.startswith("step ")]
    assert len(steps) == 17
    assert all(line.rstrip().endswith("|  stored, burn-in 3")
               for line in steps)
    assert "Stopped by SIGTERM at step 17" in out.getvalue()
    out = io.StringIO()
    assert trainer.train(stored("stopped"), out=out)["steps_run"] == 23
    assert "(step 17)" in out.getvalue()
    assert "Done: step 40" in out.getvalue()

    want = checkpoint_values(tmp_path / "reference" / "ckpt-40")
    got = checkpoint_values(tmp_path / "stopped" / "ckpt-40")
    table = [k for k in want if k.startswith("stored_state/")]
    assert len(table) == 3 and want.keys() == got.keys()  # h_0, c_0, written
    written = [want[k] for k in table if "written" in k][0]
    assert (written >= 0).mean() > 0.9  # most chunks were stored
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
