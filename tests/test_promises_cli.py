"""train.py and evaluate.py as a user runs them: --max_to_keep, --clip_norm
and the cosine learning rate; Ctrl-C (exit code 130); evaluate.py
--checkpoint, --export_dir and --sample against the same checkpoint read in
process, and its exit codes; --watch with train.py running beside it."""

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

from lstm_ctl.run import checkpoints
from lstm_ctl.eval import engine as evaluation
from helpers import scalars

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def run(script, *args, timeout=180):
    return subprocess.run([sys.executable, str(ROOT / script), *args],
                          cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout)


CLIP = 1e-4


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cli")
    text = tmp_path / "t.txt"
    rng = np.random.default_rng(0)
    text.write_text("".join(rng.choice(list("abcd \n"), size=600)))
    model_dir = tmp_path / "run"
    result = run("train.py", "--task=text", f"--text_file={text}",
                 f"--model_dir={model_dir}", "--units=8", "--seq_len=5",
                 "--batch_size=2", "--train_steps=6", "--log_every=1",
                 "--hist_every=100", "--checkpoint_every=1",
                 "--max_to_keep=3", f"--clip_norm={CLIP}",
                 "--lr_schedule=cosine", "--learning_rate=0.05")
    assert result.returncode == 0, result.stderr
    return model_dir


def test_max_to_keep_clip_norm_and_cosine_from_the_command_line(text_run):
    model_dir = text_run
    listed = checkpoints.list_checkpoints(str(model_dir))
    assert [checkpoints.checkpoint_step(p) for p in listed] == [4, 5, 6]
    assert not list(model_dir.glob("ckpt-[123].*"))   # deleted, not hidden
    config = json.loads((model_dir / "config.json").read_text())
    assert config["clip_norm"] == CLIP and config["max_to_keep"] == 3

    # Cosine decay to 5% over --train_steps: the rate of each step.
    for step, lr in scalars(model_dir, "learning_rate").items():
        want = 0.05 * (0.95 * 0.5 * (1 + np.cos(np.pi * (step - 1) / 6))
                       + 0.05)
        assert lr == pytest.approx(want, rel=1e-5), step

    # Clipping: every gradient was far above CLIP before clipping, and Adam's
    # moments only ever saw clipped ones (|m| <= CLIP, v <= CLIP^2).
    assert min(scalars(model_dir, "grad_norm").values()) > 100 * CLIP
    reader = tf.train.load_checkpoint(str(model_dir / "ckpt-6"))
    slots = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
             if k.startswith("optimizer/_variables/")]
    assert len(slots) >= 10
    norm = np.sqrt(sum(float((s.astype(np.float64) ** 2).sum())
                       for s in slots))
    assert 0.2 * CLIP < norm <= 1.01 * CLIP


def test_evaluate_checkpoint_export_and_sample(text_run, tmp_path):
    model_dir = text_run
    ckpt = str(model_dir / "ckpt-4")
    export_dir = tmp_path / "export"
    rows_json = tmp_path / "rows.json"
    result = run("evaluate.py", f"--model_dir={model_dir}",
                 f"--checkpoint={ckpt}", "--state_mode=carry",
                 f"--export_dir={export_dir}", "--sample=15", "--prime=ab",
                 f"--output_json={rows_json}")
    assert result.returncode == 0, result.stderr
    rows = json.loads(rows_json.read_text())["rows"]
    assert [(r["checkpoint"], r["step"], r["state_mode"]) for r in rows] == [
        (ckpt, 4, "carry"), (ckpt, 4, "naive")]

    # The same checkpoint, in process: the same numbers, sample and export.
    ev = evaluation.Evaluator(str(model_dir))
    ev.restore(ckpt)
    want = ev.evaluate("carry")
    assert rows[0]["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert rows[0]["bpc"] == pytest.approx(want["bpc"], rel=1e-6)
    sample = evaluation.sample_text(ev.model, ev.task, "ab", 15,
                                    seed=ev.config.seed)
    assert (f"--- 15 characters from {ckpt} at temperature 1.0:\nab{sample}\n"
            in result.stdout)
    assert (export_dir / "step.tflite").exists()
    loaded = tf.saved_model.load(str(export_dir))
    x = np.eye(6, dtype="float32")[[0, 3, 1, 5, 2]][None]
    state = ev.model.initial_state(1)
    served = loaded.signatures["serve"](inputs=tf.constant(x),
                                        h_0=state[0].h + 0.5, c_0=state[0].c)
    outputs, _ = ev.model(x, initial_state=((state[0].h + 0.5,
                                             state[0].c),))
    np.testing.assert_allclose(served["outputs"], outputs, atol=1e-5)
    # A later checkpoint gives other numbers: ckpt-4 was the one read.
    ev.restore(str(model_dir / "ckpt-6"))
    assert abs(ev.evaluate("carry")["loss"] - want["loss"]) > 1e-7


@pytest.mark.parametrize("args, message", [
    (["--checkpoint={dir}/ckpt-99"], "evaluate.py: error: checkpoint "
                                     "'{dir}/ckpt-99' not found"),
    (["--sample=5", "--prime=zz"], "evaluate.py: error: --prime has "
                                   "characters that are not in the model's "
                                   "vocabulary: ['z']"),
    (["--temperature=0"], "--temperature must be > 0"),
    (["--all", "--watch"], "--all, --watch and --checkpoint exclude each "
                           "other"),
])
def test_evaluate_exit_codes(text_run, args, message):
    args = [a.format(dir=text_run) for a in args]
    result = run("evaluate.py", f"--model_dir={text_run}", *args, timeout=90)
    assert result.returncode == 1, result.stderr
    assert message.format(dir=text_run) in result.stderr
    assert "Traceback" not in result.stderr


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
