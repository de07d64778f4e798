"""train.py as a real process: Ctrl-C finishes the step, checkpoints it and
exits 130. (--watch beside a run that deletes checkpoints is tested in
process with a fake clock: eval/test_engine_promises.py; the skip warning
of evaluate.py: test_evaluate_py.py.)"""

import signal
import subprocess
import sys

import pytest
import tensorflow as tf

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
