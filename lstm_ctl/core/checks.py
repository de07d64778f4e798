"""What LSTMModel accepts, and the errors that say what was expected.

Pure functions: each is given what it checks against (the feature size the
model was built for, the batch and time sizes of the inputs); none reads
the model.
"""

import tensorflow as tf

from lstm_ctl.config import INITIAL_STATE_MODES

IMPLEMENTATIONS = ("fused", "loop", "cell")


def check_features(features, input_dim, name, layout):
    """`features`, the last size of the argument `name`, must be the
    `input_dim` the model was built for (`layout` names its axes)."""
    if features != input_dim:
        raise ValueError(
            f"`{name}` has {features} features but the model was built "
            f"for {input_dim}: expected shape {layout} with "
            f"features={input_dim}.")


def check_inputs(x, input_dim):
    """`x` must be `[B, T, input_dim]` with at least one timestep."""
    if x.shape.rank != 3:
        shape = x.shape.as_list() if x.shape.rank is not None else "unknown"
        raise ValueError("`inputs` must have shape [batch, time, features]"
                         f" (rank 3); got shape {shape}.")
    check_features(x.shape[-1], input_dim, "inputs",
                   "[batch, time, features]")
    if x.shape[1] == 0:
        raise ValueError("`inputs` must have at least one timestep; got "
                         f"shape {x.shape.as_list()}.")


def check_step_mask(m, name, batch, steps):
    """Validates a `[B, T]` mask (eagerly where the sizes are Python ints,
    else at run time); returns it as bool, or None."""
    if m is None:
        return None
    m = tf.convert_to_tensor(m)
    if m.dtype != tf.bool:
        m = tf.cast(m, tf.bool)
    expected = f"[batch, time] = [{batch}, {steps}]" if isinstance(
        batch, int) and isinstance(steps, int) else "[batch, time]"
    if m.shape.rank != 2:
        raise ValueError(f"`{name}` must be a bool tensor of shape "
                         f"{expected}, like the inputs' first two "
                         f"dimensions; got shape {m.shape.as_list()}.")
    for axis, size in ((0, batch), (1, steps)):
        known = m.shape[axis]
        if isinstance(size, int) and known is not None:
            if known != size:
                raise ValueError(
                    f"`{name}` must have shape {expected}, like the "
                    f"inputs' first two dimensions; got shape "
                    f"{m.shape.as_list()}.")
        else:
            tf.debugging.assert_equal(
                tf.shape(m)[axis], size,
                message=f"`{name}` must have shape [batch, time] like the "
                        "inputs' first two dimensions")
    return m


def check_constructor_args(units, output_dim, num_layers, dropout,
                            recurrent_dropout, initial_state_mode,
                            implementation, input_dim):
    """The arguments of `LSTMModel(...)`, each checked on its own."""

    def positive_int(value, name, allow_none=False):
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; got "
                             f"{value!r}.")

    positive_int(units, "units")
    positive_int(output_dim, "output_dim", allow_none=True)
    positive_int(num_layers, "num_layers")
    positive_int(input_dim, "input_dim", allow_none=True)
    for name, rate in (("dropout", dropout),
                       ("recurrent_dropout", recurrent_dropout)):
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1); got {rate!r}.")
    if initial_state_mode not in INITIAL_STATE_MODES:
        raise ValueError(f"`initial_state_mode` must be one of "
                         f"{INITIAL_STATE_MODES}; got {initial_state_mode!r}.")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {IMPLEMENTATIONS};"
                         f" got {implementation!r}.")

