"""Export for serving: a SavedModel with the state as input and output, and a
TFLite flatbuffer of the single-step signature.

Signatures (state tensors are named `h_0, c_0, h_1, c_1, ...` everywhere, as
inputs and as outputs, so a client feeds one call's state outputs straight
into the next call):

- `serve(inputs [B, T, D], h_0, c_0, ...)` -> `{outputs [B, T, O], h_0, ...}`
- `step(x_t [B, D], h_0, c_0, ...)` -> `{y_t [B, O], h_0, ...}`
- `initial_state(batch_size)` -> `{h_0, c_0, ...}`

The SavedModel needs TensorFlow only (not lstm_ctl or Keras) to load.
"""

import os

import tensorflow as tf

from lstm_ctl import files
from lstm_ctl.core.state import LSTMState

TFLITE_FILE = "step.tflite"


def state_names(num_layers):
    return [f"{part}_{i}" for i in range(num_layers) for part in ("h", "c")]


def _pack(flat):
    return tuple(LSTMState(flat[2 * i], flat[2 * i + 1])
                 for i in range(len(flat) // 2))


def _unpack(state):
    names = state_names(len(state))
    return dict(zip(names, (t for s in state for t in s)))


class _Serving(tf.Module):
    """The model's variables and three signature functions."""

    def __init__(self, model):
        super().__init__(name="lstm_ctl_serving")
        if not model.built:
            raise ValueError("export needs a built model: call it once or "
                             "construct it with input_dim=...")
        # Track the variables only: the SavedModel then needs no Keras.
        self.weights = [v.value if hasattr(v, "value") and isinstance(
            v.value, tf.Variable) else v for v in model.weights]
        n, units, dim = model.num_layers, model.units, model.input_dim
        names = state_names(n)
        state_specs = [tf.TensorSpec([None, units], tf.float32, name=k)
                       for k in names]

        def serve(inputs, *flat):
            outputs, final = model(inputs, initial_state=_pack(flat))
            return {"outputs": outputs, **_unpack(final)}

        def step(x_t, *flat):
            y_t, next_state = model.step(x_t, _pack(flat))
            return {"y_t": y_t, **_unpack(next_state)}

        def initial_state(batch_size):
            return _unpack(model.initial_state(batch_size))

        self.serve = tf.function(serve, input_signature=[
            tf.TensorSpec([None, None, dim], tf.float32, name="inputs"),
            *state_specs])
        self.step = tf.function(step, input_signature=[
            tf.TensorSpec([None, dim], tf.float32, name="x_t"),
            *state_specs])
        self.initial_state = tf.function(initial_state, input_signature=[
            tf.TensorSpec([], tf.int32, name="batch_size")])

    def signatures(self):
        return {"serve": self.serve.get_concrete_function(),
                "step": self.step.get_concrete_function(),
                "initial_state": self.initial_state.get_concrete_function()}


def export_saved_model(model, export_dir):
    """Writes the SavedModel with `serve`, `step` and `initial_state`."""
    if getattr(model, "stateful", False):
        raise ValueError("export a model built with stateful=False: serving "
                         "passes the state in and out explicitly.")
    module = _Serving(model)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    return export_dir


def export_tflite(saved_model_dir, path):
    """Writes a TFLite flatbuffer of the SavedModel's `step` signature.

    Builtin ops only; the signature keeps its name (`step`) and its tensor
    names. (The full-sequence `serve` loop would need Flex ops.)
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=["step"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    return files.write_bytes(path, flatbuffer)


def export(model, export_dir):
    """SavedModel in `export_dir` and `export_dir/step.tflite`."""
    export_saved_model(model, export_dir)
    tflite = export_tflite(export_dir, os.path.join(export_dir, TFLITE_FILE))
    return export_dir, tflite
