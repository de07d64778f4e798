"""MultiWorkerMirroredStrategy as two train.py worker processes on
127.0.0.1 (TF_CONFIG): the same losses and weights as one device."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lstm_ctl.train import trainer
from helpers import ROOT, free_port, scalars, replicas_config as config

ATOL = 1e-5




@pytest.mark.slow
def test_two_multi_worker_processes_match_one_device(tmp_path):
    steps = 6
    args = ["--units=16", "--num_layers=2", "--seq_len=10", "--batch_size=8",
            f"--train_steps={steps}", "--log_every=1", "--hist_every=1000",
            "--checkpoint_every=3", "--lr_schedule=constant"]
    reference = trainer.train(
        config(tmp_path, "reference", train_steps=steps), out=io.StringIO())
    ports = [free_port(), free_port()]
    model_dir = tmp_path / "multi"
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config),
                   TF_CPP_MIN_LOG_LEVEL="3")
        workers.append(subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"),
             f"--model_dir={model_dir}", "--strategy=multi_worker", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [w.communicate(timeout=240) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    assert f"Done: step {steps}" in outputs[0][0]   # the chief reports
    assert outputs[1][0] == ""                      # the other worker not
    losses = list(scalars(model_dir, "loss").values())
    np.testing.assert_allclose(losses, reference["losses"], atol=ATOL)
    assert (model_dir / f"ckpt-{steps}.index").exists()
    assert not (model_dir / ".worker_1").exists()
