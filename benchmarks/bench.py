"""Speed and memory of lstm_ctl against keras.layers.LSTM (and torch.nn.LSTM
when torch is importable), measured in one run.

    python benchmarks/bench.py                 # or: make bench
    python benchmarks/bench.py --configs=A --rounds=10

Every implementation runs the same job: a train step is forward + a Dense
head at every step + MSE + Adam; a forward is the sequence and the head.
lstm_ctl's train step runs twice: `model(x, training=True)` and as users
call it, `out, _ = model(x)` inside their own tape (`lstm_ctl_as_called`;
its forward is `lstm_ctl`'s).
After warm-up the implementations are interleaved round by round, so that a
slow phase of the machine hits them all alike; the table shows medians and
ratios against the best of keras.layers.LSTM with and without jit_compile.
It also measures single-timestep streaming latency at B=1 (streaming.py),
the batched step of a pool of streams at B = 256, 1,024, 4,096 against
torch.nn.LSTMCell and the matmul alone (batched_step.py),
achieved GFLOP/s against a measured matmul peak, peak memory of a train
step on a long sequence (each in its own process), and the train step under
the float32 and mixed_bfloat16 dtype policies (precision.py). Results go to a
JSON file as well.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from lstm_ctl import LSTMModel  # noqa: E402

CONFIGS = {"A": dict(B=32, T=100, D=32, H=128),
           "B": dict(B=1, T=100, D=32, H=128),
           "C": dict(B=64, T=50, D=64, H=256)}
OUT_DIM = 1
# Implementations whose forward is another's (timed once, under that name).
SAME_FORWARD = {"lstm_ctl_as_called": "lstm_ctl"}

try:
    import torch
    torch.set_num_threads(os.cpu_count())
except ImportError:  # optional, never a dependency
    torch = None


# ------------------------------------------------------------ implementations
def keras_impl(c, jit):
    inputs = keras.Input((None, c["D"]))
    h = keras.layers.LSTM(c["H"], return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(OUT_DIM)(h))
    return tf_fns(model, lambda x: model(x, training=True),
                  lambda x: model(x), jit)


def lstm_ctl_impl(c, jit, dtype=None, as_called=False):
    """`as_called`: the train step calls `model(x)` without `training=`,
    as the README's custom loop and most users write it."""
    model = LSTMModel(c["H"], output_dim=OUT_DIM, input_dim=c["D"],
                      dtype=dtype)
    train_call = ((lambda x: model(x)[0]) if as_called
                  else (lambda x: model(x, training=True)[0]))
    return tf_fns(model, train_call, lambda x: model(x)[0], jit)


def tf_fns(model, train_call, infer_call, jit):
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    variables = model.trainable_variables

    @tf.function(jit_compile=jit)
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(train_call(x) - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables),
                                      variables))
        return loss

    @tf.function(jit_compile=jit)
    def forward(x):
        return infer_call(x)

    return (lambda x, y: train(x, y).numpy(),
            lambda x: forward(x).numpy())


def torch_impl(c):
    lstm = torch.nn.LSTM(c["D"], c["H"], batch_first=True)
    head = torch.nn.Linear(c["H"], OUT_DIM)
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, 1e-3)

    def train(x, y):
        optimizer.zero_grad()
        loss = torch.mean((head(lstm(x)[0]) - y) ** 2)
        loss.backward()
        optimizer.step()
        return loss.item()

    def forward(x):
        with torch.no_grad():
            return head(lstm(x)[0]).numpy()

    return train, forward


def implementations(c, with_torch):
    impls = {"keras": lambda: keras_impl(c, False),
             "keras_jit": lambda: keras_impl(c, True),
             "lstm_ctl": lambda: lstm_ctl_impl(c, False),
             "lstm_ctl_as_called": lambda: lstm_ctl_impl(c, False,
                                                         as_called=True),
             "lstm_ctl_jit": lambda: lstm_ctl_impl(c, True)}
    if with_torch:
        impls["torch"] = lambda: torch_impl(c)
    return impls


# ------------------------------------------------------------------- timing
def interleaved(fns, rounds, warmup):
    """Median seconds of each fn, the fns interleaved round by round.

    The order is shuffled each round (seeded), so that no implementation
    always runs right after the same other one: a framework's threads can
    keep spinning for a while after a call (torch's OpenMP, TensorFlow's
    pool) and slow whatever runs next.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    order = list(fns)
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def flops(c):
    """Forward FLOPs of one sequence batch; a train step counts 3x."""
    per_step = 2 * c["B"] * 4 * c["H"] * (c["D"] + c["H"]) \
        + 2 * c["B"] * c["H"] * OUT_DIM
    return per_step * c["T"]


def matmul_peak():
    """GFLOP/s of a large float32 matmul (TensorFlow and, if present, torch)."""
    n = 1024
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    mm = tf.function(lambda: tf.matmul(a, b))
    fns = {"tf": lambda: mm().numpy()}
    if torch is not None:
        ta, tb = torch.randn(n, n), torch.randn(n, n)
        fns["torch"] = lambda: (ta @ tb).numpy()
    t = interleaved(fns, rounds=15, warmup=2)
    return {k: 2 * n ** 3 / v / 1e9 for k, v in t.items()}


def bench_config(name, c, rounds, warmup, with_torch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(c["B"], c["T"], c["D"])).astype("float32")
    y = rng.normal(size=(c["B"], c["T"], OUT_DIM)).astype("float32")
    xt, yt = tf.constant(x), tf.constant(y)
    train, forward, first_call = {}, {}, {}
    for impl, make in implementations(c, with_torch).items():
        t0 = time.perf_counter()
        tr, fw = make()
        if impl == "torch":
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            train[impl], forward[impl] = (lambda tr=tr: tr(tx, ty),
                                          lambda fw=fw: fw(tx))
        else:
            train[impl], forward[impl] = (lambda tr=tr: tr(xt, yt),
                                          lambda fw=fw: fw(xt))
        train[impl]()
        first_call[impl] = time.perf_counter() - t0
        if impl in SAME_FORWARD:  # measured once, under the other name
            del forward[impl]
        else:
            forward[impl]()
    result = {"config": dict(c), "first_call_s": first_call,
              "train_ms": {k: v * 1e3 for k, v in
                           interleaved(train, rounds, warmup).items()},
              "forward_ms": {k: v * 1e3 for k, v in
                             interleaved(forward, rounds, warmup).items()}}
    f = flops(c)
    result["train_gflops"] = {k: 3 * f / v / 1e6
                              for k, v in result["train_ms"].items()}
    for impl, same in SAME_FORWARD.items():
        if impl in result["train_ms"]:
            result["forward_ms"][impl] = result["forward_ms"][same]
    result["forward_gflops"] = {k: f / v / 1e6
                                for k, v in result["forward_ms"].items()}
    return result


# ------------------------------------------------------------------- memory
def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(impl, steps):
    """In a child process: how far RSS rises above its level before one
    train step of T=steps, sampled every millisecond during the step.

    The step's shapes are compiled (and run once) at T=8 first; the T=2000
    step then pays its own compilation too where the implementation
    compiles per shape (XLA), which is part of what a user sees.
    """
    import threading
    c = dict(CONFIGS["A"], T=steps)
    train, _ = implementations(c, torch is not None)[impl]()
    rng = np.random.default_rng(0)

    def batch(t):
        x = rng.normal(size=(c["B"], t, c["D"])).astype("float32")
        y = x[..., :1].copy()
        if impl == "torch":
            return torch.from_numpy(x), torch.from_numpy(y)
        return tf.constant(x), tf.constant(y)

    train(*batch(8))
    x, y = batch(steps)
    before = _rss_mb()
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    train(x, y)
    done.set()
    sampler.join()
    print(json.dumps({"peak_mb": peak[0] - before}))


def memory(steps, with_torch):
    out = {}
    for impl in implementations(CONFIGS["A"], with_torch):
        if impl in SAME_FORWARD:  # the same layer and memory
            continue
        result = subprocess.run(
            [sys.executable, __file__, f"--memory_child={impl}",
             f"--memory_steps={steps}"], capture_output=True, text=True,
            timeout=600)
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
        out[impl] = json.loads(lines[-1])["peak_mb"] if lines else None
    return out


# -------------------------------------------------------------------- report
def ratio_table(results):
    lines = []
    for name, r in results["configs"].items():
        c = r["config"]
        lines.append(f"\nconfig {name}: B={c['B']} T={c['T']} D={c['D']} "
                     f"H={c['H']}   (median ms; x = speed-up over the best "
                     "keras.layers.LSTM)")
        lines.append(f"  {'implementation':<18} {'train':>9} {'x':>6} "
                     f"{'forward':>9} {'x':>6} {'train GF/s':>11} "
                     f"{'first call':>11}")
        best_train = min(r["train_ms"]["keras"], r["train_ms"]["keras_jit"])
        best_fwd = min(r["forward_ms"]["keras"], r["forward_ms"]["keras_jit"])
        for impl in r["train_ms"]:
            tr, fw = r["train_ms"][impl], r["forward_ms"][impl]
            lines.append(
                f"  {impl:<18} {tr:>9.2f} {best_train / tr:>6.2f} "
                f"{fw:>9.2f} {best_fwd / fw:>6.2f} "
                f"{r['train_gflops'][impl]:>11.1f} "
                f"{r['first_call_s'][impl]:>10.2f}s")
        ms, fw = r["train_ms"], r["forward_ms"]
        if "torch" in ms:
            lines.append(
                "  lstm_ctl vs torch: train "
                f"{ms['torch'] / ms['lstm_ctl']:.2f}x (training=True), "
                f"{ms['torch'] / ms['lstm_ctl_as_called']:.2f}x (as called: "
                "model(x) in the user's tape), forward "
                f"{fw['torch'] / fw['lstm_ctl']:.2f}x")
        lines.append(
            "  as called / training=True, time: "
            f"{ms['lstm_ctl_as_called'] / ms['lstm_ctl']:.2f} (1.00: no "
            "penalty for leaving out training=)")
    if "batched_step" in results:
        from batched_step import step_table
        lines += step_table(results["batched_step"],
                            results["matmul_peak_gflops"])
    if "streaming_us" in results:
        lines.append("\nstreaming, one timestep at B=1 (median microseconds):")
        for k, v in results["streaming_us"].items():
            lines.append(f"  {k:<26} {v:>8.1f}")
    peak = results["matmul_peak_gflops"]
    lines.append("\nmatmul peak (1024x1024 float32): " + ", ".join(
        f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    if "memory_mb" in results:
        lines.append(f"\nmemory: RSS rise during one train step, B=32 "
                     f"T={results['memory_steps']} D=32 H=128 (MB):")
        for k, v in results["memory_mb"].items():
            lines.append(f"  {k:<14} {v if v is None else round(v, 1)}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="A,B,C")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no_torch", action="store_true")
    parser.add_argument(
        "--torch_threads", type=int, default=None,
        help="torch's threads (default: one per core). On a machine shared "
        "with other jobs, torch's OpenMP threads spin at their barriers: "
        "measured alone there, an LSTMCell step at B=256 took 102 ms on 2 "
        "threads and 1.3 ms on 1.")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--skip_streaming", action="store_true")
    parser.add_argument("--skip_batched_step", action="store_true")
    parser.add_argument("--skip_precision", action="store_true")
    parser.add_argument("--memory_steps", type=int, default=2000)
    parser.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results.json"))
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.memory_steps)
    with_torch = torch is not None and not args.no_torch
    if with_torch and args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    results = {"machine": {"cpus": os.cpu_count(),
                           "processor": platform.processor(),
                           "tensorflow": tf.__version__,
                           "keras": keras.__version__,
                           "torch": torch.__version__ if with_torch else None,
                           "torch_threads": (torch.get_num_threads()
                                             if with_torch else None)},
               "matmul_peak_gflops": matmul_peak(), "configs": {}}
    for name in args.configs.split(","):
        print(f"config {name} ...", file=sys.stderr, flush=True)
        results["configs"][name] = bench_config(
            name, CONFIGS[name], args.rounds, args.warmup, with_torch)
    if not args.skip_precision:  # float32 vs mixed_bfloat16 train steps
        print("precision ...", file=sys.stderr, flush=True)
        from precision import precision_ms
        results["precision_train_ms"] = precision_ms(
            args.configs.split(","), args.rounds, args.warmup)
    if not args.skip_batched_step:
        print("batched step ...", file=sys.stderr, flush=True)
        from batched_step import batched_step
        results["batched_step"] = batched_step(args.rounds, with_torch)
    if not args.skip_streaming:
        print("streaming ...", file=sys.stderr, flush=True)
        from streaming import streaming
        results["streaming_us"] = streaming(args.rounds, with_torch)
    if not args.skip_memory:
        print("memory ...", file=sys.stderr, flush=True)
        results["memory_steps"] = args.memory_steps
        results["memory_mb"] = memory(args.memory_steps, with_torch)
    peak = max(results["matmul_peak_gflops"].values())
    for r in results["configs"].values():
        r["train_fraction_of_peak"] = {k: v / peak for k, v in
                                       r["train_gflops"].items()}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(ratio_table(results))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
