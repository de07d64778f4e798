"""lstm_ctl.config is the one source of every setting: flags come from its
fields, one check gives one message from flags, Python and resume, and a
run directory written before the current layout still resumes and
evaluates."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
from absl import flags

from lstm_ctl import config as config_lib
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
from helpers import ROOT, process_env, run_main

FIXTURE = ROOT / "tests" / "fixtures" / "run_v0"


def _flag_values():
    values = flags.FlagValues()
    config_lib.define_flags(values, TrainConfig)
    return values


def test_every_setting_is_a_flag_with_its_default_and_help():
    values = _flag_values()
    defaults = config_lib.to_dict(TrainConfig())
    leaves = {}
    for section in ("model", "data"):
        leaves.update(defaults.pop(section))
    leaves.update(defaults)
    leaves.pop("chosen_from_data")   # recorded by train.py, not a flag
    assert set(leaves) == set(values)   # nothing missing, nothing extra
    values(["train.py"])
    for name, default in leaves.items():
        got = values[name].value
        assert (tuple(got) if isinstance(got, list) else got) == default, name
        assert values[name].help, name
    assert "One of: carry, reset, stored" in values["state_mode"].help


def test_flags_build_the_config_they_describe():
    values = _flag_values()
    values(["train.py", "--units=7", "--seed=3", "--task=csv",
            "--csv_file=d.csv", "--target_columns=a,b", "--state_mode=reset",
            "--jit_compile"])
    config = config_lib.from_flags(values, TrainConfig)
    assert config == TrainConfig(
        model=ModelConfig(units=7), state_mode="reset", jit_compile=True,
        data=DataConfig(seed=3, task="csv", csv_file="d.csv",
                        target_columns=("a", "b")))
    assert config.seed == 3   # one seed: data, weights and dropout


@pytest.mark.parametrize("changes, messages", [
    (dict(reset_every=2, state_mode="reset"),
     ["--reset_every needs --state_mode=carry"]),
    (dict(data=DataConfig(task="csv", csv_file="d.csv",
                          target_columns=("v",), text_file="t.txt")),
     ["--text_file is for --task=text (got --text_file=t.txt with "
      "--task=csv)"]),
    (dict(model=ModelConfig(units=0, dropout=1.5), burn_in=2),
     ["--units must be >= 1 (got 0)", "--dropout must be in [0, 1) (got 1.5)",
      "--burn_in needs --state_mode=reset or stored"]),
    (dict(lr_schedule="linear"),
     ["--lr_schedule must be one of constant, cosine (got 'linear')"]),
])
def test_one_message_names_every_problem_from_python_and_flags(
        tmp_path, changes, messages):
    config = dataclasses.replace(TrainConfig(model_dir=str(tmp_path / "r")),
                                 **changes)
    with pytest.raises(ValueError) as raised:
        config_lib.validate(config)
    parts = str(raised.value).split("; ")
    assert len(parts) == len(messages)
    assert all(p.startswith(m) for p, m in zip(parts, messages)), parts
    # The same text from train.py, for the same settings as flags.
    argv = [f"--{k}={_text(v)}" for k, v in _flat(changes).items()]
    result = run_main("train.py", f"--model_dir={tmp_path / 'r'}", *argv)
    assert result.returncode == 1
    assert result.stderr == f"train.py: error: {raised.value}\n"
    assert not (tmp_path / "r").exists()


def _flat(changes):
    flat = {}
    for key, value in changes.items():
        if dataclasses.is_dataclass(value):
            default = type(value)()
            flat.update({f.name: getattr(value, f.name)
                         for f in dataclasses.fields(value)
                         if getattr(value, f.name) != getattr(default,
                                                              f.name)})
        else:
            flat[key] = value
    return flat


def _text(value):
    return ",".join(value) if isinstance(value, tuple) else value


def test_a_bad_csv_is_reported_without_importing_tensorflow(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("t,v\n1,2\n2,x\n")
    probe = ("import runpy, sys; sys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "finally:\n    print('tensorflow' in sys.modules, "
             "file=sys.stderr)\n")
    result = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT / "train.py"),
         f"--model_dir={tmp_path / 'r'}", "--task=csv", f"--csv_file={bad}",
         "--target_columns=v", "--time_column=t"],
        capture_output=True, text=True, timeout=60, env=process_env())
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("train.py: error: ") and "'x'" in lines[-2]
    assert lines[-1] == "False", result.stderr   # TensorFlow never loaded


def test_a_run_written_by_the_previous_layout_evaluates_and_resumes(
        tmp_path, monkeypatch):
    """tests/fixtures/run_v0: a csv run written by the code before the
    package layout and the one-seed config (config.json with two seeds),
    with the eval losses that code printed for it."""
    shutil.copytree(FIXTURE, tmp_path / "v0")
    monkeypatch.chdir(tmp_path / "v0")   # its paths are relative, as typed
    old = json.loads((tmp_path / "v0" / "run" / "config.json").read_text())
    assert "seed" in old and "seed" in old["data"]
    out = tmp_path / "rows.json"
    result = run_main("evaluate.py", "--model_dir=run",
                      f"--output_json={out}")
    assert result.returncode == 0, result.stderr
    want = json.loads((FIXTURE / "eval_losses.json").read_text())
    got = {r["state_mode"]: r["loss"]
           for r in json.loads(out.read_text())["rows"]
           if r["state_mode"] in want}
    assert got == pytest.approx(want, rel=1e-5)
    result = run_main("train.py", "--model_dir=run", "--task=csv",
                      "--csv_file=d.csv", "--target_columns=v",
                      "--time_column=day", "--units=4", "--seq_len=5",
                      "--batch_size=2", "--train_steps=6",
                      "--checkpoint_every=4", "--log_every=2",
                      "--hist_every=100")
    assert result.returncode == 0, result.stderr
    assert "(step 4)" in result.stdout and "Done: step 6" in result.stdout
    # Its checkpointed data iterator restores only into a pipeline with
    # tf.data's autotuning, which new runs leave off (data/pipelines.py).
    info = json.loads((tmp_path / "v0" / "run" / "run.json").read_text())
    assert info["data_autotune"] is True


def test_a_failed_write_keeps_the_previous_config_json(tmp_path,
                                                      monkeypatch):
    from lstm_ctl import files
    config_lib.save(TrainConfig(model_dir=str(tmp_path)), str(tmp_path))
    before = (tmp_path / "config.json").read_text()

    def dump_half(value, f, **kwargs):
        f.write("{")
        raise OSError("disk full")
    monkeypatch.setattr(files.json, "dump", dump_half)
    with pytest.raises(OSError, match="disk full"):
        config_lib.save(TrainConfig(model_dir=str(tmp_path),
                                    train_steps=9), str(tmp_path))
    assert (tmp_path / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
