"""Ctrl-C in the training loop, in process: the first SIGINT finishes the
step and writes its checkpoint; a second one stops at once and the last
complete checkpoint stays. (Exit code 130 from train.py:
test_promises_cli.py.)"""

import io
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl.run import checkpoints
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig


def config(tmp_path, **kwargs):
    values = dict(model_dir=str(tmp_path / "run"), model=ModelConfig(units=4),
                  data=DataConfig(seq_len=5, batch_size=2), train_steps=20,
                  log_every=1, hist_every=100, checkpoint_every=2,
                  lr_schedule="constant")
    values.update(kwargs)
    return TrainConfig(**values)


class SignalAt:
    """Sends `count` SIGINTs to this process while batch `step` is fetched,
    as a user pressing Ctrl-C during that step would."""

    def __init__(self, iterator, step, count):
        self.iterator, self.step, self.count = iterator, step, count
        self.fetched = 0

    def __next__(self):
        self.fetched += 1
        if self.fetched == self.step:
            for _ in range(self.count):
                os.kill(os.getpid(), signal.SIGINT)
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
