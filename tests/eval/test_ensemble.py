"""Ensembles (`train.py --ensemble=K`, train/ensemble.py, run/merged.py,
eval/ensemble.py): members trained with their own seeds in their own dirs,
evaluated alone and side by side in one model (the members stepped by
hand are the reference), which the ensemble's dir holds for evaluate.py,
export and serve.py; and the mixes of layouts that are refused."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import config as config_lib
from lstm_ctl.eval import engine
from lstm_ctl.eval.ensemble import Ensemble
from lstm_ctl.run import checkpoints
from lstm_ctl.run import holdout
from lstm_ctl.serve import loading
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
    # The ensemble's own config.json: the members' settings, ensemble=2.
    top = config_lib.load(str(run))
    assert (top.seed, top.ensemble, top.model.units) == (5, 2, 8)
    latest = [checkpoints.latest_checkpoint(m) for m in members]
    names = [dict(tf.train.list_variables(p)) for p in latest]
    assert names[0].keys() == names[1].keys()
    # Other seeds, other weights.
    first = [k for k in names[0] if k.startswith("model/")][0]
    a, b = (tf.train.load_checkpoint(p).get_tensor(first) for p in latest)
    assert not np.allclose(a, b)

    # Without --ensemble, a resumed run takes the recorded size; both
    # finished: only resumed.
    again = run_main("train.py", *[a for a in args if a != "--ensemble=2"])
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("Resuming from") == 2
    assert "step 8/8" not in again.stdout


def _reference_forecast(members, series, seq_len, horizon):
    """The members side by side, stepped by hand: each warmed up over the
    last `seq_len` history rows from its initial state, then at every step
    each takes the average of their last predictions as its input (the
    inputs are the target column), normalised."""
    (a, _), = holdout.spans([series])
    warm = series.inputs[max(a - seq_len, 0):a - 1][None]
    states = [m(warm)[1] for m in members]
    x, path = series.inputs[a - 1][None, None], []
    for _ in range(horizon):
        outputs = []
        for k, m in enumerate(members):
            out, states[k] = m(x, initial_state=states[k])
            outputs.append(np.asarray(out))
        x = np.mean(outputs, 0)
        path.append(x[0, 0])
    return np.array(path)


def test_evaluate_scores_the_members_side_by_side(trained, tmp_path):
    root, _, _ = trained
    run = root / "run"
    flags = [f"--forecast={HORIZON}"]

    def evaluate(model_dir, name, *more):
        files = {k: tmp_path / f"{name}.{k}" for k in ("f", "p", "json")}
        result = run_main(
            "evaluate.py", f"--model_dir={model_dir}", *flags, *more,
            f"--forecast_csv={files['f']}", f"--predictions_csv={files['p']}",
            f"--output_json={files['json']}")
        assert result.returncode == 0, result.stderr
        return files, json.loads(files["json"].read_text())["rows"], result

    export = tmp_path / "export"
    ens_files, rows, result = evaluate(run, "ensemble",
                                       f"--export_dir={export}")
    assert "ensemble of 2" in result.stdout
    alone = []   # each member evaluated alone at its default checkpoint
    for k, member in enumerate(layout.members(str(run))):
        evaluator = engine.Evaluator(member, horizon=HORIZON)
        path = evaluator.restore_default(lambda _: None)
        member_rows = evaluator.evaluate_checkpoint(
            path, write_summaries=False, restore=False)
        predictions = tmp_path / f"member{k}.p"
        evaluator.write_outputs(predictions_csv=str(predictions))
        alone.append((predictions, member_rows))
    # The one-step predictions: the members' averaged.
    for column in ("predicted_carry", "predicted_reset"):
        np.testing.assert_allclose(
            _read(ens_files["p"], column),
            np.mean([_read(p, column) for p, _ in alone], 0), atol=1e-4)
    # Each member's rows in the ensemble's table are its rows alone.
    for _, member_rows in alone:
        for r in member_rows:
            assert any(r == e for e in rows), r
    ensemble_rows = {r["state_mode"]: r for r in rows
                     if r["checkpoint"] == "ensemble of 2"}
    assert set(ensemble_rows) == {"carry", "reset", "naive",
                                  "holdout_forecast_carry",
                                  "holdout_forecast_reset",
                                  "holdout_forecast_naive"}
    # The hold-out forecast: the members stepped by hand, each fed the
    # average (not each its own forecast, averaged after).
    ensemble = Ensemble(str(run), layout.members(str(run)),
                        horizon=HORIZON)
    ensemble.evaluate_members(warn=lambda _: None)
    task, (series,) = ensemble.task, ensemble.series
    mean, std = (np.array(task.norm[k])[task.norm["targets"]]
                 for k in ("mean", "std"))
    path = ensemble.last["paths"]["holdout_forecast_reset"][0]
    members = [m.model for m in ensemble.members]
    np.testing.assert_allclose(
        (path - mean) / std, _reference_forecast(
            members, series, ensemble.config.data.seq_len, HORIZON),
        atol=1e-4)
    own = np.mean([_reference_forecast([m], series,
                                       ensemble.config.data.seq_len, HORIZON)
                   for m in members], 0)
    assert not np.allclose((path - mean) / std, own, atol=1e-4)
    # The ensemble's dir is a run: its checkpoint (written by train.py)
    # holds the weights evaluated here, and the SavedModel exported is it.
    plain = engine.Evaluator(str(run), horizon=HORIZON)
    path = plain.restore_default(lambda _: None)
    assert checkpoints.checkpoint_step(path) == 8
    for saved, merged in zip(plain.model.weights, ensemble.model.weights):
        np.testing.assert_array_equal(saved, merged)
    x = np.stack([series.inputs[:20]]).astype("float32")
    saved = tf.saved_model.load(str(export))
    initial = saved.signatures["initial_state"](batch_size=tf.constant(1))
    np.testing.assert_allclose(
        saved.signatures["serve"](inputs=tf.constant(x), **initial)[
            "outputs"],
        np.mean([np.asarray(m(x)[0]) for m in members], 0), atol=1e-5)
    # serve.py loads the same model.
    served = loading.load(str(run))
    np.testing.assert_allclose(
        served.model(x)[0], np.mean([m(x)[0] for m in members], 0),
        atol=1e-5)


def test_mixed_layouts_and_tools_of_one_checkpoint_are_refused(trained, tmp_path,
                                                       make_run_dir):
    root, args, _ = trained
    run = root / "run"
    member = run / "member-0"
    other = [a for a in args if a != "--ensemble=2"] + ["--ensemble=3"]
    result = run_main("train.py", *other)
    assert result.returncode == 1
    assert "holds an ensemble of 2 members" in result.stderr
    assert "--ensemble=2" in result.stderr
    single = make_run_dir(tmp_path / "single")
    result = run_main("train.py", *[a for a in args if not a.startswith(
        "--model_dir")], f"--model_dir={single}")
    assert result.returncode == 1 and "holds a single run" in result.stderr
    # serve.py takes the trained ensemble, not one whose members are not
    # all trained yet.
    config_lib.validate_serve(config_lib.ServeConfig(model_dir=str(run)))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    layout.write(str(unfinished), 2, 0)
    with pytest.raises(ValueError, match="merged model is not written yet"):
        config_lib.validate_serve(config_lib.ServeConfig(
            model_dir=str(unfinished)))
    result = run_main("evaluate.py", f"--model_dir={unfinished}")
    assert result.returncode == 1
    assert "merged model is not written yet" in result.stderr
    assert f"--model_dir={unfinished / 'member-0'}" in result.stderr
    result = run_main("evaluate.py", f"--model_dir={run}", "--watch")
    assert result.returncode == 1
    assert "is an ensemble of 2 runs" in result.stderr
    assert f"--model_dir={member}" in result.stderr
    result = run_main("train.py", "--task=text", f"--text_file={root}/t.txt",
                      "--ensemble=2", f"--model_dir={tmp_path / 'text'}")
    assert result.returncode == 1
    assert "--ensemble averages numeric predictions" in result.stderr


def test_a_trainer_refuses_an_ensemble_given_or_chosen(tmp_path):
    from lstm_ctl.config import defaults
    from lstm_ctl.train import trainer
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("t,y\n" + "".join(f"{i},{np.sin(i / 3):.4f}\n"
                                          for i in range(100)))
    config = config_lib.TrainConfig(
        model_dir=str(tmp_path / "run"), data=config_lib.DataConfig(
            task="csv", csv_file=str(csv_file), target_columns=("y",),
            time_column="t"))
    for left in ({"ensemble": 2}, {"ensemble": None, "state_mode": None}):
        with pytest.raises(ValueError, match=r"--ensemble=[23] trains "
                                             "several: trainer.train"):
            trainer.Trainer(defaults._set(config, left))
    assert not (tmp_path / "run").exists()
