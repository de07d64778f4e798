"""train.py and evaluate.py as a user runs them (in process): --max_to_keep,
--clip_norm and the cosine learning rate; evaluate.py --checkpoint,
--export_dir and --sample against the same checkpoint read in the library,
and its exit codes. Real processes: e2e/test_signals_process.py."""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl.run import checkpoints
from lstm_ctl.eval import engine as evaluation
from helpers import run_main, scalars

ROOT = pathlib.Path(__file__).resolve().parents[1]

def run(script, *args, timeout=None):
    return run_main(script, *args)


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


def test_all_skips_a_checkpoint_that_cannot_be_read(text_run, tmp_path):
    # What evaluate.py --watch and --all meet when max_to_keep deletes or a
    # crash cuts a listed checkpoint: a warning, and the others evaluated.
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(text_run, run_dir)
    data = run_dir / "ckpt-5.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:len(data.read_bytes()) // 2])
    out = tmp_path / "rows.json"
    result = run("evaluate.py", f"--model_dir={run_dir}", "--all",
                 "--state_mode=carry", "--eval_steps=2",
                 f"--output_json={out}")
    assert result.returncode == 0, result.stderr
    assert (f"Warning: skipped: checkpoint {run_dir}/ckpt-5 cannot be read"
            in result.stderr)
    rows = json.loads(out.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert [r["step"] for r in rows if r["state_mode"] == "carry"] == [4, 6]
