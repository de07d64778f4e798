"""Stored state and burn-in through a real SIGTERM: a resumed train.py ends
with the same weights, optimizer and stored states as an uninterrupted one."""

import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import ROOT, process_env


def train_py(model_dir, *args):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"--model_dir={model_dir}",
         *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=process_env())


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if name.startswith(("model/", "optimizer/", "stored_state/",
                                "step/"))}


@pytest.mark.slow
def test_stored_mode_resumed_after_sigterm_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(3)
    corpus = tmp_path / "t.txt"
    corpus.write_text("".join(rng.choice(list("abc de\n"), size=500)))
    args = ["--task=text", f"--text_file={corpus}", "--state_mode=stored",
            "--burn_in=3", "--units=16", "--seq_len=5", "--batch_size=4",
            "--train_steps=40", "--log_every=1", "--hist_every=1000",
            "--checkpoint_every=8", "--deterministic"]
    out, err = train_py(tmp_path / "reference", *args).communicate(
        timeout=240)
    assert "Done: step 40" in out, err

    proc = train_py(tmp_path / "stopped", *args)
    for line in proc.stdout:
        if line.startswith("step ") and int(line.split()[1].split("/")[0]) \
                >= 17:
            assert line.rstrip().endswith("|  stored, burn-in 3")
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    stopped = int(out.split("Stopped by SIGTERM at step ")[1].split(":")[0])
    assert stopped < 40
    out, err = train_py(tmp_path / "stopped", *args).communicate(timeout=240)
    assert f"(step {stopped})" in out and "Done: step 40" in out, err

    want = checkpoint_values(tmp_path / "reference" / "ckpt-40")
    got = checkpoint_values(tmp_path / "stopped" / "ckpt-40")
    table = [k for k in want if k.startswith("stored_state/")]
    assert len(table) == 3 and want.keys() == got.keys()  # h_0, c_0, written
    written = [want[k] for k in table if "written" in k][0]
    assert (written >= 0).mean() > 0.9  # most chunks were stored
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
