"""K models side by side in one (core/side_by_side.py): against the K
models run alone."""

import numpy as np
import pytest

from lstm_ctl import LSTMModel, LSTMState
from lstm_ctl.core import side_by_side


def _members(count, **kwargs):
    members = []
    for k in range(count):
        model = LSTMModel(units=4, output_dim=2, input_dim=3, seed=k,
                          **kwargs)
        rng = np.random.default_rng(10 + k)
        for v in model.trainable_variables:   # every weight non-trivial
            v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
        members.append(model)
    return members


@pytest.mark.parametrize("implementation", ["fused", "cell"])
def test_the_merged_model_is_its_members_side_by_side(implementation):
    members = _members(3, num_layers=2, initial_state_mode="learned",
                       implementation=implementation)
    merged = side_by_side.merge(members, LSTMModel(
        units=12, output_dim=2, input_dim=3, num_layers=2,
        initial_state_mode="learned", implementation=implementation))
    x = np.random.default_rng(0).normal(size=(5, 7, 3)).astype("float32")
    alone = [m(x) for m in members]
    outputs, state = merged(x)
    # The output is the members' average; the state is theirs side by side.
    np.testing.assert_allclose(outputs, np.mean([o for o, _ in alone], 0),
                               atol=1e-5)
    for mine, (_, theirs) in zip(side_by_side.split_state(state, 3), alone):
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(a.h, b.h, atol=1e-5)
            np.testing.assert_allclose(a.c, b.c, atol=1e-5)
    # From a given state (the members' side by side), one step on.
    rng = np.random.default_rng(1)
    given = [tuple(LSTMState(*rng.normal(size=(2, 5, 4)).astype("float32"))
                   for _ in range(2)) for _ in members]
    wide = tuple(LSTMState(np.concatenate([g[i].h for g in given], -1),
                           np.concatenate([g[i].c for g in given], -1))
                 for i in range(2))
    step = merged(x[:, :1], initial_state=wide)[0]
    np.testing.assert_allclose(step, np.mean(
        [m(x[:, :1], initial_state=g)[0] for m, g in zip(members, given)],
        0), atol=1e-5)


def test_members_that_do_not_fit_are_refused():
    members = _members(2)
    with pytest.raises(ValueError, match="make 8 units, not 12"):
        side_by_side.merge(members, LSTMModel(units=12, output_dim=2,
                                              input_dim=3))
    with pytest.raises(ValueError, match="2 layers"):
        side_by_side.merge(members, LSTMModel(units=8, output_dim=2,
                                              input_dim=3, num_layers=2))
