"""Ensembles (`train.py --ensemble=K`, train/ensemble.py, eval/ensemble.py):
members trained with their own seeds in their own dirs, evaluated alone
and as an average whose numbers are the members' averaged, and the mixes
of layouts that are refused."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import config as config_lib
from lstm_ctl.eval.ensemble import Ensemble
from lstm_ctl.eval.forecast import Forecaster, skill_rmse
from lstm_ctl.run import checkpoints
from lstm_ctl.config import ensemble as layout
from helpers import run_main

ARGS = ["--task=csv", "--target_columns=y", "--time_column=t",
        "--state_mode=windows", "--seq_len=6", "--batch_size=8", "--units=8",
        "--train_steps=8", "--checkpoint_every=8", "--log_every=4",
        "--learning_rate=0.01", "--validate_on=history",
        "--target_transform=levels"]
HORIZON = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An ensemble of 2 trained by train.py, seed 5, on a noisy sine."""
    root = tmp_path_factory.mktemp("ensemble")
    t = np.arange(80)
    y = 10 + 3 * np.sin(t / 4) + np.random.default_rng(0).normal(0, .3, 80)
    csv_file = root / "d.csv"
    csv_file.write_text("t,y\n" + "".join(f"{a},{b:.4f}\n"
                                          for a, b in zip(t, y)))
    args = [f"--csv_file={csv_file}", f"--model_dir={root / 'run'}",
            "--seed=5", "--ensemble=2", *ARGS]
    result = run_main("train.py", *args)
    assert result.returncode == 0, result.stderr
    return root, args, result


def _read(path, column):
    with open(path, newline="") as f:
        return np.array([float(r[column]) for r in csv.DictReader(f)])


def test_members_train_in_their_dirs_with_their_seeds(trained):
    root, args, result = trained
    run = root / "run"
    members = layout.members(str(run))
    assert members == [str(run / "member-0"), str(run / "member-1")]
    assert json.loads((run / layout.MEMBERS_FILE).read_text())["seeds"] == \
        [5, 6]
    for k, member in enumerate(members):
        config = config_lib.load(member)
        assert (config.seed, config.ensemble) == (5 + k, 1)
        assert f"Member {k + 1}/2 (seed {5 + k}): {member}" in result.stdout
        assert checkpoints.checkpoint_step(
            checkpoints.latest_checkpoint(member)) == 8
    assert "Ensemble of 2 trained" in result.stdout
    latest = [checkpoints.latest_checkpoint(m) for m in members]
    names = [dict(tf.train.list_variables(p)) for p in latest]
    assert names[0].keys() == names[1].keys()
    # Other seeds, other weights.
    first = [k for k in names[0] if k.startswith("model/")][0]
    a, b = (tf.train.load_checkpoint(p).get_tensor(first) for p in latest)
    assert not np.allclose(a, b)

    again = run_main("train.py", *args)   # both finished: only resumed
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("Resuming from") == 2
    assert "step 8/8" not in again.stdout


def test_evaluate_scores_the_average_of_the_members(trained, tmp_path):
    root, _, _ = trained
    run = root / "run"
    flags = [f"--forecast={HORIZON}"]

    def evaluate(model_dir, name):
        files = {k: tmp_path / f"{name}.{k}" for k in ("f", "p", "json")}
        result = run_main(
            "evaluate.py", f"--model_dir={model_dir}", *flags,
            f"--forecast_csv={files['f']}", f"--predictions_csv={files['p']}",
            f"--output_json={files['json']}")
        assert result.returncode == 0, result.stderr
        return files, json.loads(files["json"].read_text())["rows"], result

    ens_files, rows, result = evaluate(run, "ensemble")
    alone = [evaluate(m, f"member{k}")
             for k, m in enumerate(layout.members(str(run)))]
    assert "ensemble of 2" in result.stdout
    # The future forecast and the one-step predictions: the members'
    # averaged, each member evaluated alone at its default checkpoint.
    np.testing.assert_allclose(
        _read(ens_files["f"], "future_forecast"),
        np.mean([_read(f["f"], "future_forecast") for f, _, _ in alone], 0),
        atol=1e-4)
    for column in ("predicted_carry", "predicted_reset"):
        np.testing.assert_allclose(
            _read(ens_files["p"], column),
            np.mean([_read(f["p"], column) for f, _, _ in alone], 0),
            atol=1e-4)
    # Each member's rows in the ensemble's table are its rows alone.
    for _, member_rows, _ in alone:
        for r in member_rows:
            assert any(r == e for e in rows), r
    ensemble_rows = {r["state_mode"]: r for r in rows
                     if r["checkpoint"] == "ensemble of 2"}
    assert set(ensemble_rows) == {"carry", "reset", "naive",
                                  "holdout_forecast_carry",
                                  "holdout_forecast_reset",
                                  "holdout_forecast_naive"}
    # The hold-out forecast's RMSE: of the members' paths averaged, each
    # run here by its own Forecaster.
    ensemble = Ensemble(str(run), layout.members(str(run)),
                        horizon=HORIZON)
    backtests = []
    for member in ensemble.members:
        ensemble.member_checkpoint(member)
        backtests.append(Forecaster(member.model, member.task,
                                    member.config.data.seq_len)
                         .skill_paths(member.series, HORIZON))
    averaged = backtests[0]._replace(paths={
        name: np.mean([b.paths[name] for b in backtests], 0)
        for name in backtests[0].paths})
    for name, value in skill_rmse(averaged).items():
        assert ensemble_rows[name]["rmse"] == pytest.approx(value, rel=1e-5)
    member0 = {r["state_mode"]: r for r in alone[0][1]}
    assert ensemble_rows["holdout_forecast_reset"]["rmse"] != pytest.approx(
        member0["holdout_forecast_reset"]["rmse"], rel=1e-3)


def test_mixed_layouts_and_one_model_tools_are_refused(trained, tmp_path,
                                                       make_run_dir):
    root, args, _ = trained
    run = root / "run"
    member = run / "member-0"
    no_ensemble = [a for a in args if a != "--ensemble=2"]
    result = run_main("train.py", *no_ensemble)
    assert result.returncode == 1
    assert "holds an ensemble of 2 members" in result.stderr
    assert "--ensemble=2" in result.stderr
    single = make_run_dir(tmp_path / "single")
    result = run_main("train.py", *[a for a in args if not a.startswith(
        "--model_dir")], f"--model_dir={single}")
    assert result.returncode == 1 and "holds a single run" in result.stderr
    result = run_main("evaluate.py", f"--model_dir={run}", "--watch")
    assert result.returncode == 1
    assert "is an ensemble of 2 runs" in result.stderr
    assert f"--model_dir={member}" in result.stderr
    with pytest.raises(ValueError, match="serve.py serves one model"):
        config_lib.validate_serve(config_lib.ServeConfig(model_dir=str(run)))
    config_lib.validate_serve(config_lib.ServeConfig(model_dir=str(member)))
    result = run_main("train.py", "--task=text", f"--text_file={root}/t.txt",
                      "--ensemble=2", f"--model_dir={tmp_path / 'text'}")
    assert result.returncode == 1
    assert "--ensemble averages numeric predictions" in result.stderr
