"""Train step time of lstm_ctl under dtype policies (float32 vs
mixed_bfloat16), interleaved round by round; part of `bench.py`.

    python benchmarks/precision.py --configs=A --rounds=10
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench import CONFIGS, OUT_DIM, interleaved, lstm_ctl_impl  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")


def precision_ms(configs, rounds, warmup):
    """`{config: {policy: median train step ms}}`."""
    out = {}
    for name in configs:
        c = CONFIGS[name]
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=(c["B"], c["T"], c["D"])), tf.float32)
        y = tf.constant(rng.normal(size=(c["B"], c["T"], OUT_DIM)),
                        tf.float32)
        steps = {p: lstm_ctl_impl(c, False, dtype=p)[0] for p in POLICIES}
        fns = {p: (lambda s=s: s(x, y)) for p, s in steps.items()}
        out[name] = {p: 1000 * t for p, t in
                     interleaved(fns, rounds, warmup).items()}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="A,B,C")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    results = precision_ms(args.configs.split(","), args.rounds, args.warmup)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
