"""Stateful mode of LSTMModel: the kept state and `reset_state`.

The kept state lives in `state.StateVariables` (`[None, H]` variables, so
its batch size can change), created by the model when `stateful=True`: they
are checkpointed with the model but are not model weights.
"""

import tensorflow as tf

from lstm_ctl.core import state as state_lib
from lstm_ctl.core.state import LSTMState


def make_kept_variables(model):
    """The kept state of a stateful `model`, as its attribute `kept_state`."""
    model.kept_state = state_lib.StateVariables(
        model.num_layers, model.units, model.state_dtype, name="kept_state")


class StatefulMixin:
    """`state`, `reset_state` and the kept state's use in calls."""

    def _require_stateful(self, what):
        if not self.stateful:
            raise ValueError(
                f"`{what}` needs a model built with stateful=True; this model "
                "keeps no state (pass `initial_state` to each call instead).")

    @property
    def state(self):
        """The kept state (stateful models): a tuple of `LSTMState`.

        None before the first call (nothing is kept yet).
        """
        self._require_stateful("state")
        if tf.executing_eagerly():
            return self.kept_state.read()
        return self.kept_state.value()

    def _keep(self, new_state):
        self.kept_state.assign(new_state)

    def _kept_state_for(self, batch):
        """The kept state to start a call of `batch` examples from.

        With nothing kept yet, the initial state. A kept state of another
        batch size is an error that says how to reset.
        """
        kept_batch = self.kept_state.batch_size()
        # Truncated BPTT: no gradient flows into earlier batches.
        kept = state_lib.stop_gradient(self.kept_state.value())
        template = ("This stateful model keeps a state of batch size {} but "
                    "the inputs have batch size {}. Call "
                    "model.reset_state() to start over from the initial "
                    "state at the new batch size, "
                    "model.reset_state(state) with a state of the new batch "
                    "size, or pass initial_state=... to this call.")
        if tf.executing_eagerly():
            kept_batch = int(kept_batch)
            if kept_batch == 0:
                return self.initial_state(batch)
            if kept_batch != int(batch):
                raise ValueError(template.format(kept_batch, int(batch)))
            return kept
        # Inside a tf.function the sizes are known only at run time.
        ok = tf.logical_or(tf.equal(kept_batch, 0), tf.equal(kept_batch, batch))
        message = tf.strings.format(template, (kept_batch, batch))
        with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
            empty = tf.equal(kept_batch, 0)
        init = self.initial_state(batch)
        return tuple(
            LSTMState(tf.cond(empty, lambda i=i: init[i].h, lambda k=k: k.h),
                      tf.cond(empty, lambda i=i: init[i].c, lambda k=k: k.c))
            for i, k in enumerate(kept))

    def reset_state(self, state=None, mask=None, batch_size=None):
        """Resets the kept state of a stateful model.

        - `reset_state()`: nothing is kept (`state` is None); the next call
          starts from the initial state at whatever batch size it has.
        - `reset_state(batch_size=N)`: the initial state for N examples.
        - `reset_state(state)`: these values (any batch size; it then holds).
        - `reset_state(mask=m)`, `m` bool `[B]`: only examples where m is
          True go back to the initial state (or to `state`, when given).
        """
        self._require_stateful("reset_state")
        if state is not None and batch_size is not None:
            raise ValueError("reset_state takes `state` or `batch_size`, not "
                             "both (the state's rows give the batch size).")
        if state is None and mask is None and batch_size is None:
            self.kept_state.clear()
            return
        kept_batch = int(self.kept_state.batch_size())
        if state is not None:
            target = state_lib.normalize_state(
                state, self.num_layers, self.units, None, "state",
                self.state_dtype)
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
                                            self.kept_state.value())
        self._keep(target)

