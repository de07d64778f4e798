"""One layer's contract, the same for its three implementations.

    outputs, final_state = layer_sequence(cell, inputs, training)

runs one LSTM layer (the weights of `cell`, a `keras.layers.LSTMCell`) over a
whole time-major sequence:

- `fused.layer_sequence`: the fast path, XLA-compiled, with a hand-written
  backward pass (`implementation="fused"`);
- `loop.layer_sequence`: a `tf.while_loop` with the input projection hoisted
  out of it (`"loop"`);
- `loop.cell_layer_sequence`: steps the `LSTMCell` itself, Keras's own code,
  the reference the others are tested against (`"cell"`).

`inputs` is a `LayerInputs`; the result is `(outputs [T, B, H], final
LSTMState)`. Sequences are in the compute dtype (`inputs.x`'s), the state in
its own (float32 under a mixed policy).
"""

from typing import Any, NamedTuple, Optional

import tensorflow as tf

from lstm_ctl.core.state import LSTMState


class LayerInputs(NamedTuple):
    """What one layer runs on. Time-major: sequences `[T, B, ...]`."""

    x: Any                      # [T, B, D]
    state: LSTMState            # [B, H] each, before the first step
    reset: Optional[Any] = None  # bool [T, B]: back to `init` before step t
    init: Optional[LSTMState] = None  # [B, H] each: what a reset restores
    mask: Optional[Any] = None  # bool [T, B]: False = state passes, output 0
    recurrent_dropout_mask: Optional[Any] = None  # [B, H], times h before
    #                                               h @ recurrent_kernel

    def split(self, sizes, num):
        """This batch cut into `num` pieces of `sizes` rows: a list of
        `LayerInputs` (`tf.split` on each field's batch axis)."""
        def cut(tensor, axis):
            return (tf.split(tensor, sizes, axis, num=num)
                    if tensor is not None else [None] * num)

        def cut_state(state):
            if state is None:
                return [None] * num
            return [LSTMState(h, c) for h, c in zip(cut(state.h, 0),
                                                    cut(state.c, 0))]

        fields = zip(cut(self.x, 1), cut_state(self.state), cut(self.reset, 1),
                     cut_state(self.init), cut(self.mask, 1),
                     cut(self.recurrent_dropout_mask, 0))
        return [LayerInputs(*f) for f in fields]


def weights(cell, dtype):
    """`(kernel [D, 4H], recurrent_kernel [H, 4H], bias [4H])` of `cell` in
    `dtype` (the compute dtype)."""
    return tuple(tf.cast(v, dtype) for v in (cell.kernel,
                                              cell.recurrent_kernel,
                                              cell.bias))
