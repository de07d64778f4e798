"""Fault injection: a training process killed with SIGKILL inside a
checkpoint write, then stopped with SIGTERM at a random step, resumes and
ends bit-identical to an uninterrupted run; the losses after the last
resume are the uninterrupted run's exactly. The uninterrupted run and the
last resume run in this process (TensorFlow already imported); the two
interrupted runs are processes of their own.

The kill points come from a seed drawn anew for every run and printed (shown
with a failure); LSTM_CTL_FAULT_SEED=<seed> replays that run's kill points.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import run_main, scalars

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 30
ARGS = ["--units=16", "--num_layers=2", "--seq_len=10", "--batch_size=4",
        "--dropout=0.1", f"--train_steps={STEPS}", "--log_every=1",
        "--hist_every=1000", "--checkpoint_every=4", "--deterministic"]


# Runs train.py, killing itself with SIGKILL inside the write of checkpoint
# KILL_IN_CHECKPOINT: after its files are written (KILL_MODE=files) or with
# its data file cut in half (KILL_MODE=truncated), before the index lists it.
KILLER = r'''
import os, runpy, signal, sys
from tensorflow.python.checkpoint import checkpoint_management as cm
target, mode = int(os.environ["KILL_IN_CHECKPOINT"]), os.environ["KILL_MODE"]
real_save, real_record = cm.CheckpointManager.save, cm.CheckpointManager._record_state
saving = {}
def save(self, checkpoint_number=None, *args, **kwargs):
    saving["number"] = checkpoint_number
    return real_save(self, checkpoint_number, *args, **kwargs)
def record(self):
    if saving.get("number") == target:
        if mode == "truncated":
            data = os.path.join(self.directory,
                                f"ckpt-{target}.data-00000-of-00001")
            with open(data, "r+b") as f:
                f.truncate(os.path.getsize(data) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_record(self)
cm.CheckpointManager.save, cm.CheckpointManager._record_state = save, record
sys.argv = [sys.argv[1]] + sys.argv[2:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # this lstm_ctl
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def command(model_dir):
    return [sys.executable, str(ROOT / "train.py"), f"--model_dir={model_dir}",
            *ARGS]


def fault_seed():
    """A new seed each run (LSTM_CTL_FAULT_SEED replays one), printed."""
    seed = int(os.environ.get("LSTM_CTL_FAULT_SEED") or
               time.time_ns() % 2**31)
    print(f"fault-injection seed {seed} (replay: LSTM_CTL_FAULT_SEED={seed})")
    return seed


def env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def run_until(model_dir, step, signum):
    """Starts a run and sends `signum` once it reports `step` (or later)."""
    proc = subprocess.Popen(command(model_dir), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step ") and int(line.split()[1].split("/")[0]) \
                >= step:
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, "".join(lines) + out, err


def resumed_step(stdout):
    for line in stdout.splitlines():
        if line.startswith("Resuming from"):
            return int(line.split("(step ")[1].rstrip(").\n"))
    return 0


def variables(checkpoint):
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if name.startswith(("model/", "optimizer/", "state/", "step/"))}


@pytest.mark.slow
def test_sigkill_and_sigterm_at_random_steps_resume_bit_identical(tmp_path):
    # The uninterrupted run, in this process (the processes below inherit
    # its environment: one intra-op thread, the same XLA flags).
    reference = run_main("train.py", f"--model_dir={tmp_path / 'reference'}",
                         *ARGS)
    assert reference.returncode == 0, reference.stderr
    assert f"Done: step {STEPS}" in reference.stdout
    assert "baseline" in reference.stdout and "TensorBoard:" in \
        reference.stdout
    config = json.loads((tmp_path / "reference" / "config.json").read_text())
    assert config["model"]["units"] == 16 and config["deterministic"]

    faulty = tmp_path / "faulty"
    seed = fault_seed()
    rng = np.random.default_rng(seed)

    # SIGKILL inside the write of a checkpoint: its files (whole, or the
    # data cut in half) are on disk but the index does not list it yet.
    target = int(rng.choice([8, 12, 16]))
    mode = str(rng.choice(["files", "truncated"]))
    print(f"killed inside the write of ckpt-{target} ({mode})")
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    killed = subprocess.run(
        [sys.executable, str(killer), *command(faulty)[1:]], cwd=ROOT,
        env=dict(env(), KILL_IN_CHECKPOINT=str(target), KILL_MODE=mode),
        capture_output=True, text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, (seed, killed.stderr[-2000:])
    assert (faulty / f"ckpt-{target}.index").exists()
    assert tf.train.latest_checkpoint(str(faulty)) == str(
        faulty / f"ckpt-{target - 4}"), seed

    # SIGTERM at a random step: the run resumes from the checkpoint before
    # the one whose write was killed; it saves a checkpoint of the current
    # step, says so, exits 143.
    term_at = int(rng.integers(target + 1, 26))
    print(f"SIGTERM at step {term_at}")
    code, out, err = run_until(faulty, term_at, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, (seed, err[-2000:])
    assert resumed_step(out) == target - 4, (seed, out)
    stopped = int(out.split("Stopped by SIGTERM at step ")[1].split(":")[0])
    assert stopped >= term_at and (faulty / f"ckpt-{stopped}.index").exists()
    assert "Run the same command again to resume from it." in out

    # The last resume, in this process: only a kill needs a process, and
    # one more would cost ~6 s of CPU for TensorFlow's import alone.
    final = run_main("train.py", f"--model_dir={faulty}", *ARGS)
    assert final.returncode == 0, final.stderr
    assert f"Resuming from {faulty}/ckpt-{stopped} (step {stopped})" in \
        final.stdout

    want = variables(tmp_path / "reference" / f"ckpt-{STEPS}")
    got = variables(faulty / f"ckpt-{STEPS}")
    assert want.keys() == got.keys() and len(want) > 20
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    expected = scalars(tmp_path / "reference", "loss")
    seen = scalars(faulty, "loss")
    assert sorted(seen) == list(range(1, STEPS + 1))
    assert seen == expected    # bit for bit, every step
