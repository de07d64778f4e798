"""Numbers a user can trust from evaluate.py: the naive row, the warnings
(present where they must be, absent where they must not), --warmup=N, runs
that move (config.json's absolute paths, another file with the same
columns), flags checked before any evaluation, one TensorBoard point per
checkpoint and setting."""

import io
import json
import os

import numpy as np
import pytest

from helpers import scalars
from lstm_ctl import config as config_lib
from lstm_ctl.eval import engine as evaluation
from lstm_ctl.run import checkpoints, holdout
from lstm_ctl.train import trainer
from helpers import run_main
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig

ROWS = 100     # a yearly series of 100 rows: 90 history, 10 held out


def write_series(path, rows=ROWS, seed=0, columns=("year", "flow")):
    """Alternating around 100 (+-10) with noise: repeating the last value
    is always 20 off, so any model that learned a little beats naive."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    flow = 100 + 10 * (-1.0) ** t + rng.normal(0, 0.5, rows)
    lines = [",".join(columns)] + [f"{1900 + i},{v:.3f}"
                                   for i, v in zip(t, flow)]
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluate_main(*args):
    """evaluate.py in process: (exit code, stdout, stderr)."""
    return tuple(run_main("evaluate.py", *args))


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """A csv run trained from its own directory with a relative path."""
    root = tmp_path_factory.mktemp("trust")
    write_series(root / "flows.csv")
    here = os.getcwd()
    os.chdir(root)
    try:
        config = TrainConfig(
            model_dir="run", model=ModelConfig(units=8),
            data=DataConfig(task="csv", csv_file="flows.csv",
                            target_columns=("flow",), time_column="year",
                            seq_len=5, batch_size=4),
            train_steps=20, log_every=10, checkpoint_every=10,
            learning_rate=0.01, lr_schedule="constant")
        trainer.train(config, out=io.StringIO())
    finally:
        os.chdir(here)
    return root


def test_config_records_absolute_paths_and_the_horizon(csv_run):
    config = config_lib.load(str(csv_run / "run"))
    assert config.data.csv_file == str(csv_run / "flows.csv")
    # 89 train pairs in 4 lanes of 22 steps, 4 chunks of 5 trained on each:
    # no state was carried over more than 20 steps.
    info = json.loads((csv_run / "run" / holdout.RUN_FILE).read_text())
    assert info["state_horizon"] == 20


def test_evaluate_from_another_directory(csv_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_json = tmp_path / "new" / "dir" / "rows.json"   # dirs created
    code, out, err = evaluate_main(f"--model_dir={csv_run / 'run'}",
                                   f"--output_json={out_json}")
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert [r["state_mode"] for r in result["rows"]] == [
        "carry", "reset", "naive"]
    assert "naive" in out and "reset - carry" in out


def test_naive_row_is_the_last_value_repeated_by_hand(csv_run):
    ev = evaluation.Evaluator(str(csv_run / "run"))
    rows = ev.evaluate_checkpoint(
        checkpoints.latest_checkpoint(str(csv_run / "run")),
        write_summaries=False)
    naive = rows[2]
    raw = np.loadtxt(csv_run / "flows.csv", delimiter=",", skiprows=1)[:, 1]
    cut = 90
    hand_mae = np.abs(raw[cut:] - raw[cut - 1:-1]).mean()
    assert naive["state_mode"] == "naive"
    assert naive["mae"] == pytest.approx(hand_mae, rel=1e-4)
    std = np.array(ev.task.norm["std"])[0]
    assert naive["loss"] == pytest.approx(
        (((raw[cut:] - raw[cut - 1:-1]) / std) ** 2).mean(), rel=1e-4)


def test_warnings_appear_where_they_must_and_not_where_they_must_not(
        csv_run, tmp_path):
    run = csv_run / "run"
    # The default warm-up runs over 89 history steps; training carried the
    # state over at most 20.
    code, out, err = evaluate_main(f"--model_dir={run}",
                                   f"--output_json={tmp_path / 'a.json'}")
    assert code == 0, err
    warnings = json.loads((tmp_path / "a.json").read_text())["warnings"]
    horizon = [w for w in warnings if "warm-up" in w]
    assert len(horizon) == 1 and "up to 89 steps" in horizon[0] and \
        "more than 20 steps" in horizon[0] and "--warmup=20" in horizon[0]
    assert "Warning: " in out
    # Warm-up within the horizon, carry only: the model beats naive (20 off
    # every year), so nothing is wrong and nothing is said.
    code, out, err = evaluate_main(f"--model_dir={run}", "--warmup=20",
                                   "--state_mode=carry",
                                   f"--output_json={tmp_path / 'b.json'}")
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["warnings"] == []
    carry, naive = result["rows"]
    assert carry["loss"] < naive["loss"]
    assert "Warning" not in out


def test_warning_rules():
    s = lambda loss: {"loss": loss, "mae": 0.0}  # noqa: E731
    assert holdout.warnings({"carry": s(1.0), "reset": s(1.5),
                             "naive": s(2.0)}, "naive", 10, 20) == []
    lines = holdout.warnings({"carry": s(1.6), "reset": s(1.5),
                              "naive": s(1.55)}, "repeat-last-value", 30, 20)
    assert len(lines) == 3
    assert "30 steps" in lines[0] and "more than 20" in lines[0]
    assert "carry is worse than reset" in lines[1]
    assert ("worse than the naive repeat-last-value baseline (loss carry 1.6 "
            "vs naive 1.55)" in lines[2]), lines[2]
    # Within 1e-6 of reset is no warning (one chunk: carry equals reset).
    assert holdout.warnings({"carry": s(1.0), "reset": s(1.0)}) == []


def test_warmup_n_starts_from_the_last_n_history_rows(csv_run):
    ev = evaluation.Evaluator(str(csv_run / "run"), warmup="7")
    ev.restore(checkpoints.latest_checkpoint(str(csv_run / "run")))
    s = ev.series[0]
    a = s.cut
    # By hand: the model over inputs [a - 1 - 7, a - 1), then the hold-out.
    _, state = ev.model(s.inputs[None, a - 8:a - 1])
    out, _ = ev.model(s.inputs[None, a - 1:-1], initial_state=state)
    mse = ((out[0].numpy() - s.targets[a:]) ** 2).mean()
    assert ev.evaluate("carry")["loss"] == pytest.approx(mse, rel=1e-5)
    assert ev.warmup_steps() == 7
    with pytest.raises(ValueError, match="--warmup must be history, none or "
                                         "a number of rows >= 1; got '0'"):
        evaluation.Evaluator(str(csv_run / "run"), warmup="0")


def test_evaluate_on_another_file_with_the_same_columns(csv_run, tmp_path):
    other = write_series(tmp_path / "other.csv", seed=5)
    code, out, err = evaluate_main(f"--model_dir={csv_run / 'run'}",
                                   f"--csv_file={other}", "--state_mode=carry",
                                   f"--output_json={tmp_path / 'o.json'}")
    assert code == 0, err
    rows = json.loads((tmp_path / "o.json").read_text())["rows"]
    ev = evaluation.Evaluator(str(csv_run / "run"), data_file=str(other))
    ev.restore(checkpoints.latest_checkpoint(str(csv_run / "run")))
    assert rows[0]["loss"] == pytest.approx(ev.evaluate("carry")["loss"],
                                            rel=1e-6)
    own = evaluation.Evaluator(str(csv_run / "run"))
    own.restore(checkpoints.latest_checkpoint(str(csv_run / "run")))
    assert abs(own.evaluate("carry")["loss"] - rows[0]["loss"]) > 1e-6
    # A file without the target column: named, before any evaluation.
    bad = write_series(tmp_path / "bad.csv", columns=("year", "level"))
    code, out, err = evaluate_main(f"--model_dir={csv_run / 'run'}",
                                   f"--csv_file={bad}")
    assert code == 1
    assert err.count("\n") == 1 and "has no column(s) ['flow']" in err
    code, _, err = evaluate_main(f"--model_dir={csv_run / 'run'}",
                                 f"--text_file={bad}")
    assert code == 1 and "--text_file is for a text run" in err


def test_flags_are_checked_before_any_evaluation(csv_run, tmp_path):
    run = csv_run / "run"
    before = sorted(p.name for p in run.rglob("*"))
    for args, message in [
            (["--sample=5"], "--sample generates text; this run's task is "
                             "'csv'"),
            (["--checkpoint=best", "--all"],
             "--all, --watch and --checkpoint exclude each other"),
            (["--warmup=abc", "--temperature=0"],
             "--warmup must be history, none or a number of rows >= 1 (got "
             "'abc'); --temperature must be > 0"),
            ([f"--output_json={tmp_path}"], "is a directory")]:
        code, out, err = evaluate_main(f"--model_dir={run}", *args)
        assert code == 1, (args, err)
        assert message in err and err.count("\n") == 1, (args, err)
        assert out == ""
    assert sorted(p.name for p in run.rglob("*")) == before


def test_one_point_per_checkpoint_and_setting_in_tensorboard(csv_run):
    run = str(csv_run / "run")
    for _ in range(2):
        code, _, err = evaluate_main(f"--model_dir={run}", "--all")
        assert code == 0, err
    code, _, err = evaluate_main(f"--model_dir={run}", "--warmup=20",
                                 "--state_mode=carry")
    assert code == 0, err
    ev = evaluation.Evaluator(run)
    want = {}
    for path in checkpoints.list_checkpoints(run):
        ev.restore(path)
        want[checkpoints.checkpoint_step(path)] = ev.evaluate("carry")["loss"]
    got = scalars(run, "loss", run="eval/history/carry")
    assert sorted(got) == sorted(want) == [10, 20]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6)
    # Event files hold each step once (a second call replaced, not added).
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator)
    acc = EventAccumulator(os.path.join(run, "eval", "history", "carry"),
                           size_guidance={"tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Tensors("loss")] == [10, 20]
    # Another warm-up setting: its own run.
    last20 = scalars(run, "loss", run="eval/last20/carry")
    assert list(last20) == [20]
    assert last20[20] != pytest.approx(got[20], rel=1e-6)


def test_sample_seed_and_prime_checked_first(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc abd abe " * 60)
    config = TrainConfig(model_dir=str(tmp_path / "text"),
                         model=ModelConfig(units=8),
                         data=DataConfig(task="text", text_file=str(text),
                                         seq_len=5, batch_size=2),
                         train_steps=2, log_every=1, eval_every=0)
    trainer.train(config, out=io.StringIO())
    run = config.model_dir

    def sample(*args):
        code, out, err = evaluate_main(f"--model_dir={run}", "--sample=40",
                                       "--prime=ab", "--state_mode=carry",
                                       *args)
        assert code == 0, err
        return out.split("at temperature 1.0:\n")[1]

    code, out, err = evaluate_main(f"--model_dir={run}", "--sample=5",
                                   "--prime=zz")
    assert code == 1 and out == ""
    assert ("--prime has characters that are not in the model's "
            "vocabulary: ['z']") in err
    assert not os.path.exists(os.path.join(run, "eval"))  # nothing ran
    seed1 = sample("--seed=1")
    assert seed1 == sample("--seed=1")
    assert seed1 != sample("--seed=2")
    assert sample() == sample(f"--seed={config.seed}")   # the run's seed
