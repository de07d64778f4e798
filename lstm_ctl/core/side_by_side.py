"""K models as one: an LSTMModel of K*H units that runs K models of H units
side by side.

Each layer's gates are block-diagonal: member k owns units `[k*H, (k+1)*H)`
of every gate, reads the same inputs as the others in the first layer and
only its own units in the layers above and in its recurrent kernel. Its h
and c therefore evolve exactly as in the member alone, and the head, each
member's kernel divided by K beside the others and the mean of their
biases, outputs the average of the members' outputs. The state is the
members' states side by side (`split_state` cuts it back).

So an ensemble of K runs is one model like any other: evaluated, served,
exported and stepped one timestep at a time with its state in and out.
Forecasting feeds the average back to every member at each step.
"""

import numpy as np

from lstm_ctl.core.state import LSTMState


def _place(matrix, k, size, count, own_rows):
    """`matrix [rows, 4*size]` of member `k` of `count`, placed in its
    columns of each gate (i, f, c, o) of a `[R, 4*size*count]` matrix:
    `own_rows` (the recurrent kernel, a kernel above the first layer): in
    rows `[k*size, (k+1)*size)` of `R = count*size`; else in all its rows
    (a first layer's kernel: every member reads the same inputs)."""
    rows = matrix.shape[0]
    total = count * size if own_rows else rows
    first = k * size if own_rows else 0
    wide = np.zeros((total, 4 * size * count), matrix.dtype)
    for g in range(4):
        start = g * size * count + k * size
        wide[first:first + rows, start:start + size] = (
            matrix[:, g * size:(g + 1) * size])
    return wide


def merge(members, into):
    """Sets the weights of `into` (an LSTMModel with `len(members)` times
    the members' units, built, otherwise like them) to the `members` side
    by side. Returns `into`."""
    count, size = len(members), members[0].units
    for m in members:
        if (m.units, m.num_layers, m.output_dim, m.initial_state_mode,
                m.input_dim) != (size, into.num_layers, into.output_dim,
                                 into.initial_state_mode, into.input_dim):
            raise ValueError(
                "side by side: every member must have the layers, head, "
                "initial state and inputs of the merged model, and "
                f"{into.units} // {count} units each; got a member of "
                f"{m.units} units, {m.num_layers} layers, head "
                f"{m.output_dim}, {m.initial_state_mode} state, input "
                f"{m.input_dim}, for a model of {into.units} units, "
                f"{into.num_layers} layers, head {into.output_dim}, "
                f"{into.initial_state_mode} state, input {into.input_dim}.")
    if into.units != count * size:
        raise ValueError(f"side by side: {count} members of {size} units "
                         f"make {count * size} units, not {into.units}.")
    for i in range(into.num_layers):
        cells = [getattr(m, f"cell_{i}") for m in members]
        kernel = sum(_place(c.kernel.numpy(), k, size, count, i > 0)
                     for k, c in enumerate(cells))
        recurrent = sum(_place(c.recurrent_kernel.numpy(), k, size, count,
                               True) for k, c in enumerate(cells))
        bias = sum(_place(c.bias.numpy()[None], k, size, count, False)
                   for k, c in enumerate(cells))[0]
        cell = getattr(into, f"cell_{i}")
        cell.kernel.assign(kernel)
        cell.recurrent_kernel.assign(recurrent)
        cell.bias.assign(bias)
        if into.initial_state_mode == "learned":
            for part in ("h", "c"):
                name = f"initial_{part}_{i}"
                getattr(into, name).assign(np.concatenate(
                    [getattr(m, name).numpy() for m in members]))
    if into.head is not None:
        into.head.kernel.assign(np.concatenate(
            [m.head.kernel.numpy() for m in members]) / count)
        into.head.bias.assign(np.mean(
            [m.head.bias.numpy() for m in members], 0))
    return into


def split_state(state, count):
    """The merged model's state (a tuple of `LSTMState`, `[B, K*H]` each)
    as the K members' states."""
    size = state[0].h.shape[-1] // count
    return [tuple(LSTMState(s.h[:, k * size:(k + 1) * size],
                            s.c[:, k * size:(k + 1) * size]) for s in state)
            for k in range(count)]
