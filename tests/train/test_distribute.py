"""Training on tf.distribute: replicas give the single-device numbers."""

import io
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel
from lstm_ctl.train import distribute
from lstm_ctl.eval import engine as evaluation
from lstm_ctl.train import trainer
from lstm_ctl.config import DataConfig
from helpers import replicas_config as config

ROOT = pathlib.Path(__file__).resolve().parents[2]
ATOL = 1e-5




def mirrored(**kwargs):
    return dict(strategy="mirrored", cpu_replicas=2, **kwargs)


def carried_and_evaluated_alike(one, two):
    """The whole carried state, gathered from both replicas, is
    checkpointed; evaluate.py reads the two-replica checkpoint like any
    other."""
    s1, s2 = one.carried.read(), two.carried.read()
    assert s2[1].h.shape == (8, 16)
    np.testing.assert_allclose(s2[1].c, s1[1].c, atol=ATOL)
    rows = [evaluation.Evaluator(t.model_dir).evaluate_checkpoint(
        t.checkpoints.latest, "carry", eval_steps=3, write_summaries=False)[0]
        for t in (one, two)]
    assert rows[1]["loss"] == pytest.approx(rows[0]["loss"], abs=ATOL)


@pytest.mark.slow
def test_two_replicas_give_the_single_device_losses_in_reset_mode(tmp_path):
    one = trainer.Trainer(config(tmp_path, "one", state_mode="reset"),
                          out=io.StringIO())
    two = trainer.Trainer(config(tmp_path, "two", state_mode="reset",
                                 **mirrored()), out=io.StringIO())
    assert two.strategy.num_replicas_in_sync == 2
    for a, b in zip(one.model.weights, two.model.weights):
        np.testing.assert_array_equal(a, b)   # same initial weights
    r1, r2 = one.run(), two.run()
    np.testing.assert_allclose(r2["losses"], r1["losses"], atol=ATOL)
    # (The carried state and evaluate.py on a two-replica checkpoint: the
    # carry-mode test below.)


@pytest.mark.slow
def test_two_replicas_give_the_single_device_losses_and_their_checkpoint_resumes_on_one_device_and_on_two(  # noqa: E501
        tmp_path):
    """Carry mode: the two-replica run trains its first half, stops, and
    resumes on two replicas (its copy on one device); every loss is the
    single-device run's."""
    one = trainer.Trainer(config(tmp_path, "one"), out=io.StringIO())
    half = trainer.Trainer(config(tmp_path, "two", train_steps=6,
                                  **mirrored()), out=io.StringIO())
    assert half.strategy.num_replicas_in_sync == 2
    for a, b in zip(one.model.weights, half.model.weights):
        np.testing.assert_array_equal(a, b)   # same initial weights
    full = one.run()
    first = half.run()
    assert first["steps_run"] == 6
    np.testing.assert_allclose(first["losses"], full["losses"][:6],
                               atol=ATOL)
    shutil.copytree(half.model_dir, tmp_path / "half_copy")
    two = trainer.Trainer(config(tmp_path, "two", **mirrored()),
                          out=io.StringIO())
    second = two.run()
    assert second["steps_run"] == 6
    np.testing.assert_allclose(second["losses"], full["losses"][6:],
                               atol=ATOL)
    carried_and_evaluated_alike(one, two)
    on_one = trainer.train(config(tmp_path, "half_copy"), out=io.StringIO())
    assert on_one["steps_run"] == 6
    np.testing.assert_allclose(on_one["losses"], full["losses"][6:],
                               atol=ATOL)


def test_global_batch_must_divide_among_replicas(tmp_path):
    bad = config(tmp_path, "bad", data=DataConfig(seq_len=10, batch_size=5),
                 **mirrored())
    with pytest.raises(ValueError, match=r"--batch_size=5 \(the global batch"
                                         r"\) is not divisible by the 2 "
                                         r"replicas"):
        trainer.Trainer(bad, out=io.StringIO())


def test_replicas_draw_their_own_dropout_masks():
    strategy = distribute.make_strategy("mirrored", 2)
    with strategy.scope():
        model = LSTMModel(units=4, input_dim=3, dropout=0.5, seed=1)
    x = tf.ones([2, 5, 3])

    @tf.function
    def masks():
        per_replica = strategy.run(lambda: model._dropout_masks(x, True)[0][0])
        return strategy.experimental_local_results(per_replica)

    first, second = masks()
    assert not np.array_equal(first, second)
