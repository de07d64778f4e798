"""The batched step that a pool of streams runs: one timestep of B streams
(B = 256, 1,024, 4,096; one layer, H=128, D=32, the Dense head), state fed
back, through `model.step` compiled once with an `input_signature` (batch
size None: no retrace across the bucket sizes), with and without
`jit_compile`, against `torch.nn.LSTMCell` + `torch.nn.Linear` at the same
batch and against the physical limit: the step's matmul
`[B, D + H] @ [D + H, 4H]` alone, timed in the same rounds in TensorFlow
(and in torch), and the large-matmul peak measured in the same run. Part of
`bench.py`.

    python benchmarks/batched_step.py --rounds=10
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench import OUT_DIM, interleaved, torch  # noqa: E402
from lstm_ctl import LSTMModel  # noqa: E402

BATCHES = (256, 1024, 4096)


def step_flops(batch, D, H):
    """FLOPs of one step: the gates' matmuls and the head."""
    return 2 * batch * 4 * H * (D + H) + 2 * batch * H * OUT_DIM


def batched_step(rounds, with_torch, batches=BATCHES, D=32, H=128):
    """Median µs of one step per batch size and implementation, with the
    achieved GFLOP/s and the trace counts of the compiled steps."""
    model = LSTMModel(H, output_dim=OUT_DIM, input_dim=D)
    spec = [tf.TensorSpec([None, D]),
            (tf.TensorSpec([None, H]), tf.TensorSpec([None, H]))]
    traces = {"step": 0, "step_jit": 0}

    def counted(name):
        def step(x_t, state):
            traces[name] += 1  # runs when tracing only
            return model.step(x_t, (state,))
        return step

    steps = {"lstm_ctl step": tf.function(counted("step"),
                                          input_signature=spec),
             "lstm_ctl step (jit)": tf.function(
                 counted("step_jit"), input_signature=spec,
                 jit_compile=True)}
    joined = tf.Variable(tf.random.normal([D + H, 4 * H]))
    matmul = tf.function(lambda a: tf.matmul(a, joined),
                         input_signature=[tf.TensorSpec([None, D + H])])
    results = {}
    for batch in batches:
        x = tf.random.normal([batch, D])
        fns = {}
        for name, step in steps.items():
            state = [tuple(model.initial_state(batch)[0])]

            def run(step=step, state=state):
                y, next_state = step(x, state[0])
                y.numpy()
                state[0] = tuple(next_state[0])

            fns[name] = run
        a = tf.random.normal([batch, D + H])
        fns["tf matmul alone"] = lambda a=a: matmul(a).numpy()
        if with_torch:
            tcell, thead = torch.nn.LSTMCell(D, H), torch.nn.Linear(
                H, OUT_DIM)
            tx = torch.randn(batch, D)
            tstate = [(torch.zeros(batch, H), torch.zeros(batch, H))]

            def run_torch(tcell=tcell, thead=thead, tx=tx, tstate=tstate):
                with torch.no_grad():
                    tstate[0] = tcell(tx, tstate[0])
                    thead(tstate[0][0]).numpy()

            fns["torch LSTMCell"] = run_torch
            ta, tb = torch.randn(batch, D + H), torch.randn(D + H, 4 * H)
            fns["torch matmul alone"] = lambda ta=ta, tb=tb: (ta @ tb).numpy()
        times = interleaved(fns, rounds=rounds * 5, warmup=5)
        flops = step_flops(batch, D, H)
        results[str(batch)] = {
            "us": {k: v * 1e6 for k, v in times.items()},
            "gflops": {k: flops / v / 1e9 for k, v in times.items()}}
    results["traces"] = dict(traces)
    results["shape"] = dict(D=D, H=H, layers=1, out=OUT_DIM)
    return results


def step_table(results, peak):
    """Lines of the batched-step table; `peak`: the large-matmul GFLOP/s
    measured in the same run, by framework."""
    shape = results["shape"]
    lines = [f"\nbatched step, one timestep of B streams, H={shape['H']} "
             f"D={shape['D']} one layer (median µs; GF/s; % of the "
             "framework's 1024x1024 matmul peak):"]
    batches = [k for k in results if k.isdigit()]
    names = list(results[batches[0]]["us"]) if batches else []
    lines.append(f"  {'implementation':<22}" + "".join(
        f"{'B=' + b:>24}" for b in batches))
    for name in names:
        framework = "torch" if name.startswith("torch") else "tf"
        row = f"  {name:<22}"
        for b in batches:
            us = results[b]["us"][name]
            gf = results[b]["gflops"][name]
            pct = 100 * gf / peak[framework] if framework in peak else 0
            row += f"{us:>10.1f} {gf:>6.1f} {pct:>5.0f}%"
        lines.append(row)
    if "torch LSTMCell" in names:
        ratios = []
        for b in batches:
            us = results[b]["us"]
            ours = min(us["lstm_ctl step"], us["lstm_ctl step (jit)"])
            ratios.append(f"B={b} {us['torch LSTMCell'] / ours:.2f}x")
        lines.append("  lstm_ctl step (the faster) vs torch LSTMCell: "
                     + ", ".join(ratios))
    lines.append(f"  traces of the compiled steps over {len(batches)} batch "
                 f"sizes: {results['traces']}")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    from bench import matmul_peak
    peak = matmul_peak()
    results = batched_step(args.rounds, torch is not None)
    print(json.dumps(results, indent=2))
    print("\n".join(step_table(results, peak)))
