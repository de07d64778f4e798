"""Every error a user can hit in the model says what is wrong."""

import re

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel, LSTMState
from test_model import random_inputs


@pytest.fixture
def model():
    return LSTMModel(units=4, num_layers=2, input_dim=3)


def state(batch, units=4, layers=2):
    z = np.zeros((batch, units), "float32")
    return tuple(LSTMState(z, z) for _ in range(layers))


@pytest.mark.parametrize("shape, message", [
    ((2, 3), r"must have shape \[batch, time, features\] \(rank 3\); got "
             r"shape \[2, 3\]"),
    ((2, 4, 3, 1), r"rank 3\); got shape \[2, 4, 3, 1\]"),
    ((2, 4, 7), r"has 7 features but the model was built for 3"),
    ((2, 0, 3), r"at least one timestep"),
])
def test_bad_inputs(model, shape, message):
    with pytest.raises(ValueError, match=message):
        model(np.zeros(shape, "float32"))


@pytest.mark.parametrize("bad_state, message", [
    (LSTMState(np.zeros((2, 4)), np.zeros((2, 4))),
     r"must be a tuple of 2 LSTMState\(h, c\).*got a single LSTMState"),
    (state(2, layers=1), r"got a tuple of 1 elements for a model of 2 layer"),
    (np.zeros((2, 4)), r"must be a tuple of 2 LSTMState.*got a tensor of shape \[2, 4\]"),
    ((LSTMState(np.zeros((2, 4)), np.zeros((2, 4))), np.zeros((2, 4))),
     r"`initial_state\[1\]` must be an LSTMState\(h, c\)"),
    (state(2, units=5), r"`initial_state\[0\].h` must have shape \[batch, 4\];"
                        r" got shape \[2, 5\]"),
    (state(3), r"`initial_state\[0\].h` has batch size 3 but the inputs have "
               r"batch size 2"),
])
def test_bad_initial_state(model, bad_state, message):
    with pytest.raises(ValueError, match=message):
        model(random_inputs(2, 4, 3), initial_state=bad_state)


def test_single_layer_state_hint():
    one = LSTMModel(units=4, input_dim=3)
    with pytest.raises(ValueError, match=r"wrap a single layer's state in a "
                                         r"tuple: \(state,\)"):
        one(random_inputs(2, 4, 3), initial_state=state(2, layers=1)[0])


@pytest.mark.parametrize("name", ["reset_mask", "mask"])
@pytest.mark.parametrize("shape, message", [
    ((2,), r"must be a bool tensor of shape \[batch, time\] = \[2, 4\].*got "
           r"shape \[2\]"),
    ((2, 5), r"must have shape \[batch, time\] = \[2, 4\].*got shape \[2, 5\]"),
    ((3, 4), r"must have shape \[batch, time\] = \[2, 4\].*got shape \[3, 4\]"),
])
def test_bad_masks(model, name, shape, message):
    with pytest.raises(ValueError, match=f"`{name}` {message}"):
        model(random_inputs(2, 4, 3), **{name: np.ones(shape, bool)})


def test_bad_mask_inside_tf_function(model):
    run = tf.function(lambda x, m: model(x, mask=m), input_signature=[
        tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, None], tf.bool)])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`mask` must have shape \[batch, time\]"):
        run(random_inputs(2, 4, 3), np.ones((2, 5), bool))


def test_stateful_batch_size_mismatch(model):
    stateful = LSTMModel(units=4, input_dim=3, stateful=True)
    stateful(random_inputs(4, 2, 3))
    with pytest.raises(ValueError, match=re.escape(
            "keeps a state of batch size 4 but the inputs have batch size 2. "
            "Call model.reset_state() to start over")):
        stateful(random_inputs(2, 2, 3))
    with pytest.raises(ValueError, match="batch size 4 but the inputs have "
                                         "batch size 2"):
        stateful.step(np.zeros((2, 3), "float32"))


def test_reset_state_errors(model):
    with pytest.raises(ValueError, match="needs a model built with "
                                         "stateful=True"):
        model.reset_state()
    with pytest.raises(ValueError, match="stateful=True"):
        _ = model.state
    stateful = LSTMModel(units=4, input_dim=3, stateful=True)
    with pytest.raises(ValueError, match="no state is kept yet"):
        stateful.reset_state(mask=[True])
    stateful(random_inputs(3, 2, 3))
    with pytest.raises(ValueError, match=r"needs a mask of shape \[3\].*got "
                                         r"shape \[2\]"):
        stateful.reset_state(mask=[True, False])
    with pytest.raises(ValueError, match=r"`state\[0\].c` must have shape "
                                         r"\[batch, 4\]"):
        stateful.reset_state((LSTMState(np.zeros((3, 4)), np.zeros((3, 2))),))
    with pytest.raises(ValueError, match="not both"):
        stateful.reset_state(state(3, layers=1), batch_size=3)


def test_step_errors(model):
    with pytest.raises(ValueError, match=r"`x_t` must have shape \[batch, "
                                         r"features\] \(one timestep\)"):
        model.step(np.zeros((2, 1, 3), "float32"), state(2))
    with pytest.raises(ValueError, match="`x_t` has 5 features but the model "
                                         "was built for 3"):
        model.step(np.zeros((2, 5), "float32"), state(2))
    with pytest.raises(ValueError, match=r"`prev_state\[0\].h` has batch size "
                                         r"2 but the inputs have batch size 1"):
        model.step(np.zeros((1, 3), "float32"), state(2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(units=0), "`units` must be a positive integer; got 0"),
    (dict(units=4, num_layers=0), "`num_layers` must be a positive integer"),
    (dict(units=4, output_dim=-1), "`output_dim` must be a positive integer"),
    (dict(units=4, dropout=1.0), r"`dropout` must be in \[0, 1\); got 1.0"),
    (dict(units=4, initial_state_mode="random"),
     "`initial_state_mode` must be one of"),
    (dict(units=4, implementation="cudnn"), "`implementation` must be one of"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LSTMModel(**kwargs)
