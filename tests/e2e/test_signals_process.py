"""train.py and evaluate.py as real processes: Ctrl-C (exit code 130) and
--watch beside a training run that deletes checkpoints (SIGTERM: 143)."""

import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from lstm_ctl.run import checkpoints
from helpers import ROOT, process_env as env

pytestmark = pytest.mark.slow


TINY = ["--units=4", "--seq_len=5", "--batch_size=2", "--hist_every=1000"]


def test_ctrl_c_exits_130_with_a_checkpoint_of_the_current_step(tmp_path):
    model_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"--model_dir={model_dir}",
         *TINY, "--train_steps=100000", "--log_every=7",
         "--checkpoint_every=100000"],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    for line in proc.stdout:
        if line.startswith("step "):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    step = int(out.split("Stopped by SIGINT at step ")[1].split(":")[0])
    assert step >= 7
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest == str(model_dir / f"ckpt-{step}")
    assert "Traceback" not in err


WATCHER = r'''
import os, runpy, sys, time
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from lstm_ctl.eval import engine as evaluation
real_watch = evaluation.watch

def watch(model_dir, timeout, **kwargs):
    first = True
    for path in real_watch(model_dir, timeout, **kwargs):
        if first:
            # Hold the first checkpoint until the run beside deletes it.
            first = False
            deadline = time.monotonic() + 90
            while (os.path.exists(path + ".index")
                   and time.monotonic() < deadline):
                time.sleep(0.1)
            print(f"watcher: {path} deleted", flush=True)
        yield path

evaluation.watch = watch
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def test_watch_beside_a_training_run_skips_a_deleted_checkpoint(tmp_path):
    model_dir = tmp_path / "run"
    train = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"--model_dir={model_dir}",
         *TINY, "--train_steps=100000", "--log_every=20",
         "--checkpoint_every=20", "--max_to_keep=1"],
        cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    watcher = tmp_path / "watcher.py"
    watcher.write_text(WATCHER)
    log = tmp_path / "watch.log"
    try:
        deadline = time.monotonic() + 240   # a loaded machine is slow
        while not (model_dir / "checkpoint").exists():
            assert time.monotonic() < deadline and train.poll() is None
            time.sleep(0.2)
        with open(log, "w") as out:
            watch = subprocess.Popen(
                [sys.executable, str(watcher), str(ROOT / "evaluate.py"),
                 f"--model_dir={model_dir}", "--watch", "--watch_timeout=6",
                 "--state_mode=carry", "--eval_steps=2"],
                cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT,
                text=True)
            # Let it evaluate two checkpoints after the deleted one.
            while log.read_text().count(" carry ") < 2:
                assert time.monotonic() < deadline and watch.poll() is None, \
                    log.read_text()
                time.sleep(0.2)
    finally:
        train.send_signal(signal.SIGTERM)
        train.communicate(timeout=60)
    assert train.returncode == 143
    final = tf.train.latest_checkpoint(str(model_dir))
    assert watch.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    deleted = text.split("watcher: ")[1].split(" deleted")[0]
    assert f"Warning: skipped: checkpoint {deleted} cannot be read" in text
    steps = [int(line.split()[1]) for line in text.splitlines()
             if line.split()[2:3] == ["carry"]]
    assert steps == sorted(set(steps)) and len(steps) >= 3
    assert steps[-1] == checkpoints.checkpoint_step(final)   # the last one
    assert checkpoints.checkpoint_step(deleted) < steps[0]
    assert "Traceback" not in text
