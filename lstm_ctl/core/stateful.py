"""Stateful mode of LSTMModel: the kept state and `reset_state`.

`KeptState` owns a stateful model's kept state: its variables (a
`state.StateVariables` of `[None, H]` variables, so that its batch size can
change), the state a call of B examples starts from, and every reset. It is
given what it needs when it is made (layers, units, dtype, and the model's
initial state as a function of the batch size) and reads nothing else of
the model. The model holds the variables as its attribute `kept_state`, so
that checkpoints hold them (at `model/kept_state/h/0`, ...); they are not
model weights.
"""

import tensorflow as tf

from lstm_ctl.core import state as state_lib
from lstm_ctl.core.state import LSTMState

MISMATCH = ("This stateful model keeps a state of batch size {} but the "
            "inputs have batch size {}. Call model.reset_state() to start "
            "over from the initial state at the new batch size, "
            "model.reset_state(state) with a state of the new batch size, or "
            "pass initial_state=... to this call.")


def require(kept, what):
    """`kept`, the `KeptState` of a stateful model; None (a model built with
    stateful=False) is the error that `what` (a method's name) needs one."""
    if kept is None:
        raise ValueError(
            f"`{what}` needs a model built with stateful=True; this model "
            "keeps no state (pass `initial_state` to each call instead).")
    return kept


class KeptState:
    """The state a stateful model keeps across calls.

    Args:
      num_layers, units: the model's layers and H.
      dtype: the dtype of every state tensor.
      initial_state: `batch_size -> state`, the model's initial state
        (zeros or learned), where calls and resets start from.
    """

    def __init__(self, num_layers, units, dtype, initial_state):
        self.num_layers = num_layers
        self.units = units
        self.dtype = dtype
        self.initial_state = initial_state
        self.variables = state_lib.StateVariables(num_layers, units, dtype,
                                                  name="kept_state")

    def read(self):
        """The kept state, a tuple of `LSTMState`; eagerly None before the
        first call (nothing is kept yet)."""
        if tf.executing_eagerly():
            return self.variables.read()
        return self.variables.value()

    def value(self):
        """The kept values (batch size 0 when nothing is kept)."""
        return self.variables.value()

    def batch_size(self):
        """The kept batch size, a tensor (0: nothing is kept)."""
        return self.variables.batch_size()

    def keep(self, new_state):
        self.variables.assign(new_state)

    def clear(self):
        """Keeps nothing: the next call starts from the initial state."""
        self.variables.clear()

    def for_batch(self, batch):
        """The state to start a call of `batch` examples from.

        With nothing kept yet, the initial state. A kept state of another
        batch size is an error that says how to reset.
        """
        kept_batch = self.variables.batch_size()
        # Truncated BPTT: no gradient flows into earlier batches.
        kept = state_lib.stop_gradient(self.variables.value())
        if tf.executing_eagerly():
            kept_batch = int(kept_batch)
            if kept_batch == 0:
                return self.initial_state(batch)
            if kept_batch != int(batch):
                raise ValueError(MISMATCH.format(kept_batch, int(batch)))
            return kept
        # Inside a tf.function the sizes are known only at run time.
        ok = tf.logical_or(tf.equal(kept_batch, 0), tf.equal(kept_batch, batch))
        message = tf.strings.format(MISMATCH, (kept_batch, batch))
        with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
            empty = tf.equal(kept_batch, 0)
        init = self.initial_state(batch)
        return tuple(
            LSTMState(tf.cond(empty, lambda i=i: init[i].h, lambda k=k: k.h),
                      tf.cond(empty, lambda i=i: init[i].c, lambda k=k: k.c))
            for i, k in enumerate(kept))

    def reset(self, state=None, mask=None, batch_size=None):
        """`LSTMModel.reset_state`: see its docstring."""
        if state is not None and batch_size is not None:
            raise ValueError("reset_state takes `state` or `batch_size`, not "
                             "both (the state's rows give the batch size).")
        if state is None and mask is None and batch_size is None:
            self.clear()
            return
        kept_batch = int(self.variables.batch_size())
        if state is not None:
            target = state_lib.normalize_state(
                state, self.num_layers, self.units, None, "state", self.dtype)
            target_batch = int(tf.shape(target[0].h)[0])
            state_lib.check_batch_size(target, target_batch, "state")
        else:
            if batch_size is not None:
                target_batch = int(batch_size)
                if target_batch < 0:
                    raise ValueError("`batch_size` must be >= 0; got "
                                     f"{batch_size}.")
            else:
                target_batch = kept_batch
            target = self.initial_state(target_batch)
        if mask is not None:
            mask = tf.convert_to_tensor(mask)
            if mask.shape.rank != 1:
                raise ValueError("`mask` of reset_state must have shape [batch]"
                                 f" (one bool per example); got shape "
                                 f"{mask.shape.as_list()}.")
            if kept_batch == 0:
                raise ValueError("reset_state(mask=...) resets some examples "
                                 "of the kept state, but no state is kept yet;"
                                 " call the model first.")
            if mask.shape[0] != kept_batch or target_batch != kept_batch:
                raise ValueError(
                    f"reset_state(mask=...) needs a mask of shape "
                    f"[{kept_batch}] (the kept state's batch size); got "
                    f"shape {mask.shape.as_list()}"
                    + ("" if target_batch == kept_batch else
                       f" and a state of batch size {target_batch}") + ".")
            target = state_lib.select_state(mask, target,
                                            self.variables.value())
        self.keep(target)
