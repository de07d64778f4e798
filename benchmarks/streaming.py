"""Streaming latency: one timestep at B=1 with the state fed back, through
`model.step` (with and without jit_compile), the exported SavedModel `step`
signature, the TFLite flatbuffer (run by LiteRT's interpreter, when
ai-edge-litert is installed), keras.layers.LSTMCell and (when torch is
importable) torch.nn.LSTMCell; part of `bench.py`.

    python benchmarks/streaming.py --rounds=10
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench import OUT_DIM, interleaved, torch  # noqa: E402
from lstm_ctl import LSTMModel  # noqa: E402
from lstm_ctl.serve import export  # noqa: E402

try:  # LiteRT: tf.lite.Interpreter is deprecated in TF 2.21
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # optional, like torch: the TFLite row is left out
    Interpreter = None


def streaming(rounds, with_torch, D=32, H=128):
    """Latency of one timestep at B=1 with the state fed back."""
    model = LSTMModel(H, output_dim=OUT_DIM, input_dim=D)
    x = tf.random.normal([1, D])
    fns = {}
    step = tf.function(model.step)
    state = [model.initial_state(1)]

    def run_step():
        y, state[0] = step(x, state[0])
        y.numpy()

    fns["lstm_ctl step"] = run_step
    step_jit = tf.function(model.step, jit_compile=True)
    state_jit = [model.initial_state(1)]

    def run_step_jit():
        y, state_jit[0] = step_jit(x, state_jit[0])
        y.numpy()

    fns["lstm_ctl step (jit)"] = run_step_jit
    export_dir = tempfile.mkdtemp(prefix="lstm_ctl_bench_")
    export.export_saved_model(model, export_dir)
    served = tf.saved_model.load(export_dir).signatures["step"]
    served_state = [{k: v for k, v in zip(
        ("h_0", "c_0"), model.initial_state(1)[0])}]

    def run_exported():
        out = served(x_t=x, **served_state[0])
        out.pop("y_t").numpy()
        served_state[0] = out

    fns["exported step signature"] = run_exported
    if Interpreter is not None:
        tflite = export.export_tflite(export_dir, os.path.join(
            export_dir, "step.tflite"))
        runner = Interpreter(tflite).get_signature_runner("step")
        x_np = x.numpy()
        lite_state = [{k: v.numpy() for k, v in served_state[0].items()}]

        def run_tflite():
            out = runner(x_t=x_np, **lite_state[0])
            out.pop("y_t")
            lite_state[0] = out

        fns["TFLite step (LiteRT)"] = run_tflite
    cell = keras.layers.LSTMCell(H)
    dense = keras.layers.Dense(OUT_DIM)
    keras_state = [[tf.zeros([1, H]), tf.zeros([1, H])]]

    @tf.function
    def keras_step(x, h, c):
        out, new = cell(x, [h, c])
        return dense(out), new

    def run_keras():
        y, keras_state[0] = keras_step(x, *keras_state[0])
        y.numpy()

    fns["keras LSTMCell"] = run_keras
    if with_torch:
        tcell, thead = torch.nn.LSTMCell(D, H), torch.nn.Linear(H, OUT_DIM)
        tx = torch.randn(1, D)
        tstate = [(torch.zeros(1, H), torch.zeros(1, H))]

        def run_torch():
            with torch.no_grad():
                tstate[0] = tcell(tx, tstate[0])
                thead(tstate[0][0]).numpy()

        fns["torch LSTMCell"] = run_torch
    return {k: v * 1e6 for k, v in
            interleaved(fns, rounds=rounds * 20, warmup=20).items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(streaming(args.rounds, torch is not None), indent=2))
