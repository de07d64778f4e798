"""LSTMModel: stacked LSTMCells, a per-step Dense head, explicit state.

One class, `LSTMModel(keras.Model)`, with its parts composed in, each given
what it needs and reading nothing of the model: the checks of its
arguments and inputs (`checks`, pure functions), the kept state of a
stateful model (`stateful.KeptState`, behind `state` and `reset_state`),
and what it changes in Keras's compile/fit/evaluate/predict
(`fitting.Fitting`, behind the Keras methods overridden at the end).
"""

import keras
import numpy as np
import tensorflow as tf

from lstm_ctl.core import checks
from lstm_ctl.core import fitting as fitting_lib
from lstm_ctl.core import fused
from lstm_ctl.core import layer as layer_lib
from lstm_ctl.core import loop
from lstm_ctl.core import state as state_lib
from lstm_ctl.core import stateful as stateful_lib
from lstm_ctl.core.state import LSTMState


def _static_or_dynamic(tensor, axis):
    """The size of `axis`: a Python int when known statically, else a tensor."""
    size = tensor.shape[axis]
    return size if size is not None else tf.shape(tensor)[axis]


@keras.saving.register_keras_serializable(package="lstm_ctl")
class LSTMModel(keras.Model):
    """A stack of `keras.layers.LSTMCell`s whose state is yours to control.

    `model(inputs [B, T, D], initial_state=None, reset_mask=None, mask=None,
    training=False)` returns `(outputs, final_state)`: `outputs` is
    `[B, T, output_dim]` (or `[B, T, units]`, the top layer's h, when
    `output_dim=None`) and `final_state` a tuple with one `LSTMState(h, c)`
    per layer. Any batch size and any length work in one compiled function.
    Dropout only with `training=True`; inside a `tf.GradientTape`,
    `model(x)` costs what `model(x, training=True)` costs (the fused layers
    save what their backward needs whenever a tape records them).

    Args:
      units: size H of h and c in every layer.
      output_dim: size of the Dense head applied at every timestep, or None.
      num_layers: number of stacked LSTM layers.
      dropout: fraction of each layer's inputs dropped in training, one mask
        per sequence (as `keras.layers.LSTM(dropout=...)`).
      recurrent_dropout: the same for h on its way into the recurrent kernel.
      initial_state_mode: "zeros", or "learned" (a trainable h0 and c0 per
        layer, broadcast to any batch size).
      stateful: keep the final state of each call in the model and start the
        next call from it; see `state` and `reset_state`.
      implementation: "fused" (input projection hoisted out of the loop,
        fused gate math) or "cell" (steps `LSTMCell.call`; the reference).
      input_dim: the feature size D; when given the model is built at once.
      seed: seed of the dropout masks.
      dtype: a Keras dtype policy, e.g. "mixed_bfloat16" (default: the
        global policy). The matmuls run in its compute dtype; variables,
        inputs, outputs and every state tensor (in, out, kept) are in its
        variable dtype (float32 under the mixed policies), and so is the
        gate math that updates the state.
    """

    def __init__(self, units, output_dim=None, num_layers=1, dropout=0.0,
                 recurrent_dropout=0.0, initial_state_mode="zeros",
                 stateful=False, implementation="fused", input_dim=None,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        # Keras would cast every floating argument (initial_state too) to
        # the compute dtype; `call` casts what it needs itself.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True  # NumPy inputs
        checks.check_constructor_args(units, output_dim, num_layers, dropout,
                                      recurrent_dropout, initial_state_mode,
                                      implementation, input_dim)
        self.units = int(units)
        self.output_dim = None if output_dim is None else int(output_dim)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.initial_state_mode = initial_state_mode
        self.stateful = bool(stateful)
        # Keras's XLA-compiled steps cannot resize the kept state: `fit`
        # runs a stateful model's step without (its layers are compiled).
        self.supports_jit = not self.stateful
        self.implementation = implementation
        self.seed = seed
        self.input_dim = None
        # `mask` is handled in `call`; outputs carry no Keras mask.
        self.supports_masking = True
        # Each cell is its own attribute so that tf.train.Checkpoint sees it.
        for i in range(self.num_layers):
            setattr(self, f"cell_{i}", keras.layers.LSTMCell(
                self.units, name=f"cell_{i}", dtype=self.dtype_policy))
        self.head = (keras.layers.Dense(self.output_dim, name="head",
                                        dtype=self.dtype_policy)
                     if self.output_dim is not None else None)
        if self.dropout > 0 or self.recurrent_dropout > 0:
            self.seed_generator = keras.random.SeedGenerator(
                seed, name="dropout_seed")
            # A SeedGenerator is not checkpointed by itself; its state
            # variable as an attribute is (and is a non-trainable weight).
            self.dropout_seed_state = self.seed_generator.state
        if self.initial_state_mode == "learned":
            for i in range(self.num_layers):
                for part in ("h", "c"):
                    setattr(self, f"initial_{part}_{i}", self.add_weight(
                        shape=(self.units,), initializer="zeros",
                        name=f"initial_{part}_{i}", autocast=False))
        # The kept state of a stateful model (None: it keeps none). Its
        # variables are the model's attribute `kept_state`, so that
        # checkpoints hold them at model/kept_state/...
        self._kept = None
        if self.stateful:
            self._kept = stateful_lib.KeptState(
                self.num_layers, self.units, self.state_dtype,
                self.initial_state)
            self.kept_state = self._kept.variables
        # What the model changes in Keras's compile/fit workflow.
        self._fitting = fitting_lib.Fitting(self._kept)
        if input_dim is not None:
            self.build((None, None, input_dim))

    # ------------------------------------------------------------------ build
    @property
    def state_dtype(self):
        """The dtype of every state tensor: the policy's variable dtype."""
        return tf.as_dtype(self.variable_dtype)

    @property
    def cells(self):
        return [getattr(self, f"cell_{i}") for i in range(self.num_layers)]

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError("LSTMModel needs the feature size D of its "
                             "inputs [B, T, D] to build; got shape "
                             f"{tuple(input_shape)}.")
        self.input_dim = int(input_dim)
        for i, cell in enumerate(self.cells):
            cell.build((None, self.input_dim if i == 0 else self.units))
        if self.head is not None:
            self.head.build((None, self.units))
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, output_dim=self.output_dim,
            num_layers=self.num_layers, dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            initial_state_mode=self.initial_state_mode,
            stateful=self.stateful, implementation=self.implementation,
            input_dim=self.input_dim, seed=self.seed)
        return config

    def compute_mask(self, inputs, mask=None):
        return None

    # ---------------------------------------------------------- initial state
    def initial_state(self, batch_size):
        """The initial state for `batch_size` examples: zeros or learned."""
        if self.initial_state_mode == "learned":
            vectors = [(getattr(self, f"initial_h_{i}"),
                        getattr(self, f"initial_c_{i}"))
                       for i in range(self.num_layers)]
            return state_lib.broadcast_state(
                [(tf.cast(h, self.state_dtype), tf.cast(c, self.state_dtype))
                 for h, c in vectors], batch_size)
        return state_lib.zeros_state(batch_size, self.units, self.num_layers,
                                     self.state_dtype)

    # --------------------------------------------------------- stateful mode
    @property
    def state(self):
        """The kept state (stateful models): a tuple of `LSTMState`.

        None before the first call (nothing is kept yet).
        """
        return stateful_lib.require(self._kept, "state").read()

    def reset_state(self, state=None, mask=None, batch_size=None):
        """Resets the kept state of a stateful model.

        - `reset_state()`: nothing is kept (`state` is None); the next call
          starts from the initial state at whatever batch size it has.
        - `reset_state(batch_size=N)`: the initial state for N examples.
        - `reset_state(state)`: these values (any batch size; it then holds).
        - `reset_state(mask=m)`, `m` bool `[B]`: only examples where m is
          True go back to the initial state (or to `state`, when given).
        """
        stateful_lib.require(self._kept, "reset_state").reset(
            state, mask, batch_size)

    # ------------------------------------------------------------------ call
    def __call__(self, inputs, *args, **kwargs):
        # NumPy inputs become tensors of their own dtype (`call` casts
        # them), so that Keras builds the model from the inputs' shape.
        if isinstance(inputs, (np.ndarray, list)):
            inputs = tf.convert_to_tensor(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, initial_state=None, reset_mask=None, mask=None,
             training=False):
        x = self._compute_input(inputs)
        checks.check_inputs(x, self.input_dim)
        batch = _static_or_dynamic(x, 0)
        steps = _static_or_dynamic(x, 1)
        reset = checks.check_step_mask(reset_mask, "reset_mask", batch,
                                       steps)
        if all(m is None for m in tf.nest.flatten(mask)):
            mask = None  # Keras fills in the (absent) masks of tensor args
        mask = checks.check_step_mask(mask, "mask", batch, steps)
        if initial_state is not None:
            state = state_lib.normalize_state(
                initial_state, self.num_layers, self.units, batch,
                "initial_state", self.state_dtype)
        elif self.stateful:
            state = self._kept.for_batch(batch)
        else:
            state = self.initial_state(batch)

        outputs, final_state = self._run(x, state, reset, mask, bool(training))
        if self.stateful:
            self._kept.keep(final_state)
        return outputs, final_state

    def _compute_input(self, inputs):
        x = tf.convert_to_tensor(inputs)
        return tf.cast(x, self.compute_dtype) if x.dtype.is_floating else x

    def _run(self, x, state, reset, mask, training):
        """The time loop on `x [B, T, D]`; returns outputs `[B, T, O]`."""
        batch = tf.shape(x)[0]
        x_tm = tf.transpose(x, [1, 0, 2])  # [T, B, D]
        reset_tm = None if reset is None else tf.transpose(reset)  # [T, B]
        mask_tm = None if mask is None else tf.transpose(mask)  # [T, B]
        init = self.initial_state(batch) if reset is not None else None
        dp, rdp = self._dropout_masks(x, training)

        layer_sequence = {"fused": fused.layer_sequence,
                          "loop": loop.layer_sequence,
                          "cell": loop.cell_layer_sequence}[
                              self.implementation]
        final, seq = [], x_tm
        for i, cell in enumerate(self.cells):
            if dp is not None:
                seq = seq * dp[i]
            seq, layer_final = layer_sequence(cell, layer_lib.LayerInputs(
                seq, state[i], reset_tm, None if init is None else init[i],
                mask_tm, None if rdp is None else rdp[i]), training)
            final.append(layer_final)
        final_state = tuple(final)

        outputs = seq if self.head is None else self.head(seq)
        outputs = tf.cast(outputs, self.state_dtype)
        if mask_tm is not None and self.head is not None:
            outputs = tf.where(mask_tm[:, :, None], outputs,
                               tf.zeros_like(outputs))
        return tf.transpose(outputs, [1, 0, 2]), final_state

    def _dropout_masks(self, x, training):
        """Per-layer dropout masks `[B, D_i]` and `[B, H]`, one per sequence.

        Drawn from the model's seed generator (checkpointed with it); under a
        tf.distribute strategy each replica draws its own masks.
        """
        if not training or (self.dropout == 0 and self.recurrent_dropout == 0):
            return None, None
        batch = tf.shape(x)[0]
        ctx = tf.distribute.get_replica_context()
        replica = tf.cast(ctx.replica_id_in_sync_group if ctx else 0,
                          tf.int64)

        def masks(rate, sizes):
            if rate == 0:
                return None
            out = []
            for size in sizes:
                seed = tf.cast(self.seed_generator.next(), tf.int64)
                seed += tf.stack([tf.constant(0, tf.int64), replica * 2**32])
                keep = tf.random.stateless_uniform(
                    tf.stack([batch, size]), seed=seed) >= rate
                out.append(tf.cast(keep, self.compute_dtype) / (1.0 - rate))
            return out

        in_sizes = [self.input_dim] + [self.units] * (self.num_layers - 1)
        return (masks(self.dropout, in_sizes),
                masks(self.recurrent_dropout, [self.units] * self.num_layers))

    # ------------------------------------------------------------------ step
    def step(self, x_t, prev_state=None):
        """One timestep: `x_t [B, D]` -> `(y_t [B, O], next_state)`.

        `prev_state=None` means the kept state for a stateful model (which is
        then updated) and the initial state otherwise. Same weights and
        numbers as `call`; no dropout (this is the serving path).
        """
        x_t = self._compute_input(x_t)
        if x_t.shape.rank != 2:
            raise ValueError("`x_t` must have shape [batch, features] (one "
                             f"timestep); got shape {x_t.shape.as_list()}.")
        if not self.built:
            self.build((None, None, x_t.shape[-1]))
        checks.check_features(x_t.shape[-1], self.input_dim, "x_t",
                              "[batch, features]")
        batch = _static_or_dynamic(x_t, 0)
        if prev_state is not None:
            state = state_lib.normalize_state(
                prev_state, self.num_layers, self.units, batch, "prev_state",
                self.state_dtype)
        elif self.stateful:
            state = self._kept.for_batch(batch)
        else:
            state = self.initial_state(batch)
        inp, next_state = x_t, []
        for cell, layer_state in zip(self.cells, state):
            kernel, recurrent_kernel, bias = layer_lib.weights(
                cell, self.compute_dtype)
            if self.implementation == "fused":  # one XLA program per layer
                h, c = fused.cell_step(inp, kernel, recurrent_kernel, bias,
                                       layer_state.h, layer_state.c)
            else:  # the reference: the same math op by op
                z = tf.cast(tf.matmul(inp, kernel) + bias, self.state_dtype)
                z += tf.cast(tf.matmul(
                    tf.cast(layer_state.h, self.compute_dtype),
                    recurrent_kernel), self.state_dtype)
                h, c = loop.gates(z, layer_state.c)
            next_state.append(LSTMState(h, c))
            inp = tf.cast(h, self.compute_dtype)
        next_state = tuple(next_state)
        if self.stateful and prev_state is None:
            self._kept.keep(next_state)
        y_t = inp if self.head is None else self.head(inp)
        return tf.cast(y_t, self.state_dtype), next_state

    # ------------------------------------- Keras's compile/fit/evaluate/predict
    # Keras calls these on the model; each hands Keras's own method to
    # `fitting.Fitting` (losses, metrics and predict on `outputs`; a stateful
    # model's batch-size checks; validation inside fit from the initial
    # state).
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        return self._fitting.compute_loss(super().compute_loss, x, y, y_pred,
                                          sample_weight, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self._fitting.compute_metrics(super().compute_metrics, x, y,
                                             y_pred, sample_weight)

    def train_step(self, data):
        return self._fitting.train_step(super().train_step, data)

    def test_step(self, data):
        return self._fitting.test_step(super().test_step, data)

    def predict_step(self, data):
        return self._fitting.predict_step(super().predict_step, data)

    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        return self._fitting.fit(super().fit, x, y, batch_size, *args,
                                 **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        return self._fitting.evaluate(super().evaluate, x, y, batch_size,
                                      *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        return self._fitting.predict(super().predict, x, batch_size, *args,
                                     **kwargs)
