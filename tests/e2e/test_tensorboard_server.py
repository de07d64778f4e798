"""A real TensorBoard server reads a run that train.py wrote.

The server runs as TensorBoard does without TensorFlow installed (its own
event-file reader; tensorboard.compat.notf is TensorBoard's switch for it):
the event files must stand on their own, and the server process pays ~1 s
of CPU instead of ~6 s for TensorFlow's import."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import free_port, process_env as env, run_main, scalars

TINY = ["--units=8", "--seq_len=5", "--batch_size=2", "--train_steps=4",
        "--log_every=1", "--hist_every=2", "--checkpoint_every=2"]


# `python -m tensorboard.main ...` with TensorBoard's no-TensorFlow switch.
SERVER = r'''
import sys, types
sys.modules["tensorboard.compat.notf"] = types.ModuleType(
    "tensorboard.compat.notf")
from tensorboard import main
sys.argv[0] = "tensorboard"
main.run_main()
'''


def train(*args):
    return run_main("train.py", *args)


@pytest.mark.slow
def test_tensorboard_server_serves_the_loss_series(tmp_path):
    model_dir = tmp_path / "tb"
    result = train(f"--model_dir={model_dir}", *TINY)
    assert result.returncode == 0, result.stderr
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, f"--logdir={model_dir}",
         "--host=127.0.0.1", f"--port={port}", "--load_fast=false"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = (f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?"
           "run=train&tag=loss")
    try:
        series, deadline = None, time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    series = json.loads(response.read())
                if len(series) == 4:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert series is not None, "TensorBoard did not answer"
        # [wall_time, step, value] rows, the same values as the event files.
        expected = scalars(model_dir, "loss")
        assert [row[1] for row in series] == [1, 2, 3, 4]
        for _, step, value in series:
            assert value == pytest.approx(expected[step], rel=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)
