"""LSTMModel: stacked LSTMCells, a per-step Dense head, explicit state."""

import keras
import tensorflow as tf

from lstm_ctl import fused, loop
from lstm_ctl import state as state_lib
from lstm_ctl.state import LSTMState

INITIAL_STATE_MODES = ("zeros", "learned")
IMPLEMENTATIONS = ("fused", "loop", "cell")


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
    """

    def __init__(self, units, output_dim=None, num_layers=1, dropout=0.0,
                 recurrent_dropout=0.0, initial_state_mode="zeros",
                 stateful=False, implementation="fused", input_dim=None,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_constructor_args(units, output_dim, num_layers, dropout,
                                recurrent_dropout, initial_state_mode,
                                implementation, input_dim)
        self.units = int(units)
        self.output_dim = None if output_dim is None else int(output_dim)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.initial_state_mode = initial_state_mode
        self.stateful = bool(stateful)
        self.implementation = implementation
        self.seed = seed
        self.input_dim = None
        # `mask` is handled in `call`; outputs carry no Keras mask.
        self.supports_masking = True
        # Each cell is its own attribute so that tf.train.Checkpoint sees it.
        for i in range(self.num_layers):
            setattr(self, f"cell_{i}", keras.layers.LSTMCell(
                self.units, name=f"cell_{i}"))
        self.head = (keras.layers.Dense(self.output_dim, name="head")
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
                        name=f"initial_{part}_{i}"))
        if self.stateful:
            # The kept state: plain tf.Variables of shape [None, H], so that
            # its batch size can change; batch size 0 means "none kept yet".
            # They are checkpointed but are not model weights.
            with tf.init_scope():
                for i in range(self.num_layers):
                    for part in ("h", "c"):
                        setattr(self, f"kept_{part}_{i}", tf.Variable(
                            tf.zeros([0, self.units], self.compute_dtype),
                            shape=tf.TensorShape([None, self.units]),
                            trainable=False, name=f"kept_{part}_{i}"))
        if input_dim is not None:
            self.build((None, None, input_dim))

    # ------------------------------------------------------------------ build
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
                [(tf.convert_to_tensor(h), tf.convert_to_tensor(c))
                 for h, c in vectors], batch_size)
        return state_lib.zeros_state(batch_size, self.units, self.num_layers,
                                     self.compute_dtype)

    # ------------------------------------------------------------------ call
    def call(self, inputs, initial_state=None, reset_mask=None, mask=None,
             training=False):
        x = tf.convert_to_tensor(inputs, dtype=self.compute_dtype)
        self._check_inputs(x)
        batch = _static_or_dynamic(x, 0)
        steps = _static_or_dynamic(x, 1)
        reset = self._check_step_mask(reset_mask, "reset_mask", batch, steps)
        mask = self._check_step_mask(mask, "mask", batch, steps)
        if initial_state is not None:
            state = state_lib.normalize_state(
                initial_state, self.num_layers, self.units, batch,
                "initial_state", self.compute_dtype)
        elif self.stateful:
            state = self._kept_state_for(batch)
        else:
            state = self.initial_state(batch)

        outputs, final_state = self._run(x, state, reset, mask, bool(training))
        if self.stateful:
            self._keep(final_state)
        return outputs, final_state

    def _run(self, x, state, reset, mask, training):
        """The time loop on `x [B, T, D]`; returns outputs `[B, T, O]`."""
        batch = tf.shape(x)[0]
        x_tm = tf.transpose(x, [1, 0, 2])  # [T, B, D]
        reset_tm = None if reset is None else tf.transpose(reset)  # [T, B]
        mask_tm = None if mask is None else tf.transpose(mask)  # [T, B]
        init = self.initial_state(batch) if reset is not None else None
        dp, rdp = self._dropout_masks(x, training)

        if self.implementation == "cell":
            seq, final_state = loop.cell_sequence(
                self.cells, x_tm, state, reset_tm, init, mask_tm, dp, rdp)
        else:
            final = []
            seq = x_tm
            for i, cell in enumerate(self.cells):
                if dp is not None:
                    seq = seq * dp[i]
                options = dict(reset=reset_tm, mask=mask_tm,
                               init=None if init is None else init[i],
                               recurrent_dropout_mask=None if rdp is None
                               else rdp[i])
                if self.implementation == "fused":
                    seq, layer_final = fused.layer_sequence(
                        seq, cell.kernel, cell.recurrent_kernel, cell.bias,
                        state[i], training=training, **options)
                else:
                    xproj = fused.project(seq, cell.kernel, cell.bias)
                    seq, layer_final = loop.layer_sequence(
                        xproj, state[i], cell.recurrent_kernel, **options)
                final.append(layer_final)
            final_state = tuple(final)

        outputs = seq if self.head is None else self.head(seq)
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
        x_t = tf.convert_to_tensor(x_t, dtype=self.compute_dtype)
        if x_t.shape.rank != 2:
            raise ValueError("`x_t` must have shape [batch, features] (one "
                             f"timestep); got shape {x_t.shape.as_list()}.")
        if not self.built:
            self.build((None, None, x_t.shape[-1]))
        self._check_features(x_t.shape[-1], "x_t", "[batch, features]")
        batch = _static_or_dynamic(x_t, 0)
        if prev_state is not None:
            state = state_lib.normalize_state(
                prev_state, self.num_layers, self.units, batch, "prev_state",
                self.compute_dtype)
        elif self.stateful:
            state = self._kept_state_for(batch)
        else:
            state = self.initial_state(batch)
        inp, next_state = x_t, []
        for cell, layer_state in zip(self.cells, state):
            z = (tf.matmul(inp, cell.kernel) + cell.bias
                 + tf.matmul(layer_state.h, cell.recurrent_kernel))
            h, c = loop.gates(z, layer_state.c)
            next_state.append(LSTMState(h, c))
            inp = h
        next_state = tuple(next_state)
        if self.stateful and prev_state is None:
            self._keep(next_state)
        y_t = inp if self.head is None else self.head(inp)
        return y_t, next_state

    # -------------------------------------------------------- stateful mode
    def _kept_vars(self):
        return [(getattr(self, f"kept_h_{i}"), getattr(self, f"kept_c_{i}"))
                for i in range(self.num_layers)]

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
        kept = tuple(LSTMState(h.read_value(), c.read_value())
                     for h, c in self._kept_vars())
        if tf.executing_eagerly() and int(tf.shape(kept[0].h)[0]) == 0:
            return None
        return kept

    def _kept_batch_size(self):
        return tf.shape(self._kept_vars()[0][0])[0]

    def _keep(self, new_state):
        for (h_var, c_var), s in zip(self._kept_vars(), new_state):
            h_var.assign(s.h)
            c_var.assign(s.c)

    def _kept_state_for(self, batch):
        """The kept state to start a call of `batch` examples from.

        With nothing kept yet, the initial state. A kept state of another
        batch size is an error that says how to reset.
        """
        kept_batch = self._kept_batch_size()
        kept = tuple(LSTMState(h.read_value(), c.read_value())
                     for h, c in self._kept_vars())
        template = ("This stateful model keeps a state of batch size {} but "
                    "the inputs have batch size {}. Call "
                    "model.reset_state(batch_size=...) to start from the "
                    "initial state at the new batch size, "
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

        - `reset_state()`: back to the initial state, same batch size.
        - `reset_state(batch_size=N)`: the initial state for N examples.
        - `reset_state(state)`: these values (any batch size; it then holds).
        - `reset_state(mask=m)`, `m` bool `[B]`: only examples where m is
          True go back to the initial state (or to `state`, when given).
        """
        self._require_stateful("reset_state")
        if state is not None and batch_size is not None:
            raise ValueError("reset_state takes `state` or `batch_size`, not "
                             "both (the state's rows give the batch size).")
        kept_batch = int(self._kept_batch_size())
        if state is not None:
            target = state_lib.normalize_state(
                state, self.num_layers, self.units, None, "state",
                self.compute_dtype)
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
            kept = tuple(LSTMState(h.read_value(), c.read_value())
                         for h, c in self._kept_vars())
            target = state_lib.select_state(mask, target, kept)
        self._keep(target)

    # ------------------------------------------------------------ checking
    def _check_features(self, features, name, layout):
        if features != self.input_dim:
            raise ValueError(
                f"`{name}` has {features} features but the model was built "
                f"for {self.input_dim}: expected shape {layout} with "
                f"features={self.input_dim}.")

    def _check_inputs(self, x):
        if x.shape.rank != 3:
            shape = x.shape.as_list() if x.shape.rank is not None else "unknown"
            raise ValueError("`inputs` must have shape [batch, time, features]"
                             f" (rank 3); got shape {shape}.")
        self._check_features(x.shape[-1], "inputs", "[batch, time, features]")
        if x.shape[1] == 0:
            raise ValueError("`inputs` must have at least one timestep; got "
                             f"shape {x.shape.as_list()}.")

    def _check_step_mask(self, m, name, batch, steps):
        """Validates a `[B, T]` mask; returns it as bool, or None."""
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


def _check_constructor_args(units, output_dim, num_layers, dropout,
                            recurrent_dropout, initial_state_mode,
                            implementation, input_dim):
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
