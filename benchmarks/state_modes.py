"""Which state policy pays: carry, reset, stored, with and without burn-in.

    python benchmarks/state_modes.py                       # sine and text
    python benchmarks/state_modes.py --tasks=sine --seeds=1,2,3

For every task, mode and seed this runs `train.py` and then
`evaluate.py --state_mode=both --warmup=history --output_json` on the
held-out data (eval `carry`: the state carried over the whole held-out
stream, started from the state its history left; eval `reset`: every chunk
from the initial state), and prints one markdown table per task: the
mean over seeds (and the spread, max - min, when there are several) of both
eval losses, the train steps/s (median of the progress windows after the
first, so compilation is not counted) and, for stored mode, the mean
`state/staleness`. The text task's corpus is made offline from Python
standard library sources (`make_corpus`). Runs already trained or evaluated in
--out_dir are read back, not rerun.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import sysconfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = {"carry": ["--state_mode=carry"],
         "reset": ["--state_mode=reset"],
         "reset --burn_in=20": ["--state_mode=reset", "--burn_in=20"],
         "stored": ["--state_mode=stored"],
         "stored --burn_in=20": ["--state_mode=stored", "--burn_in=20"]}
CORPUS_MODULES = ("argparse.py", "difflib.py", "textwrap.py", "inspect.py",
                  "tarfile.py")


def make_corpus(path):
    """A few standard library modules, concatenated (about 450 KB)."""
    lib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    text = "".join((lib / name).read_text(encoding="utf-8")
                   for name in CORPUS_MODULES)
    path.write_text(text, encoding="utf-8")
    return path


def env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def run_one(task_args, mode, seed, model_dir, train_steps, warmup):
    """Trains (once: `train.json` caches the speed and staleness) and
    evaluates (once per warm-up: `eval-<warmup>.json`)."""
    trained = model_dir / "train.json"
    if not trained.exists():
        train = subprocess.run(
            [sys.executable, str(ROOT / "train.py"),
             f"--model_dir={model_dir}", *task_args, *MODES[mode],
             f"--seed={seed}", f"--train_steps={train_steps}",
             "--log_every=100", f"--checkpoint_every={train_steps}",
             "--max_to_keep=1"],
            cwd=ROOT, env=env(), capture_output=True, text=True)
        if train.returncode != 0:
            raise RuntimeError(f"train.py failed:\n{train.stderr[-3000:]}")
        rates = [float(line.split(" steps/s")[0].split()[-1])
                 for line in train.stdout.splitlines()
                 if line.startswith("step ")]
        trained.write_text(json.dumps({
            "steps_per_sec": statistics.median(rates[1:] or rates),
            "staleness": staleness(model_dir)}))
    rows_path = model_dir / f"eval-{warmup}.json"
    if not rows_path.exists():
        evaluate = subprocess.run(
            [sys.executable, str(ROOT / "evaluate.py"),
             f"--model_dir={model_dir}", "--state_mode=both",
             f"--warmup={warmup}", f"--output_json={rows_path}"],
            cwd=ROOT, env=env(), capture_output=True, text=True)
        if evaluate.returncode != 0:
            raise RuntimeError(
                f"evaluate.py failed:\n{evaluate.stderr[-3000:]}")
    out = {r["state_mode"]: r["loss"]
           for r in json.loads(rows_path.read_text())["rows"]}
    out.update(json.loads(trained.read_text()))
    return out


def staleness(model_dir):
    """The mean of the run's `state/staleness` scalars (None if absent)."""
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator)
    from tensorboard.util import tensor_util
    acc = EventAccumulator(str(model_dir / "train"),
                           size_guidance={"tensors": 0})
    acc.Reload()
    if "state/staleness" not in acc.Tags()["tensors"]:
        return None
    return statistics.mean(float(tensor_util.make_ndarray(e.tensor_proto))
                           for e in acc.Tensors("state/staleness"))


def cell(values, digits):
    if any(v is None for v in values):
        return ""
    text = f"{statistics.mean(values):.{digits}f}"
    if len(values) > 1:
        text += f" ± {(max(values) - min(values)) / 2:.{digits}f}"
    return text


def table(task, results, seeds):
    lines = [f"{task}, seeds {','.join(map(str, seeds))}:", "",
             "| mode | eval carry loss | eval reset loss | steps/s | "
             "staleness |", "|---|---|---|---|---|"]
    for mode, runs in results.items():
        lines.append(
            f"| `{mode}` | {cell([r['carry'] for r in runs], 4)} | "
            f"{cell([r['reset'] for r in runs], 4)} | "
            f"{cell([r['steps_per_sec'] for r in runs], 1)} | "
            f"{cell([r['staleness'] for r in runs], 0)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="sine,text")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--train_steps", type=int, default=1000)
    parser.add_argument("--out_dir", default="runs/state_modes")
    parser.add_argument("--warmup", default="history",
                        choices=("history", "none"),
                        help="evaluate.py --warmup: the hold-out starts from "
                        "the state its history left, or from the initial one")
    args = parser.parse_args()
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for task in args.tasks.split(","):
        task_args = [f"--task={task}"]
        if task == "text":
            corpus = out / "stdlib.txt"
            if not corpus.exists():
                make_corpus(corpus)
            task_args.append(f"--text_file={corpus.resolve()}")
        results = {}
        for mode in args.modes.split(","):
            results[mode] = []
            for seed in seeds:
                name = f"{task}-{mode.replace(' --burn_in=', '-burn')}-s{seed}"
                results[mode].append(run_one(task_args, mode, seed,
                                             out / name, args.train_steps,
                                             args.warmup))
                print(f"done {name}: {results[mode][-1]}", file=sys.stderr,
                      flush=True)
        print(table(task, results, seeds), flush=True)
        print(flush=True)


if __name__ == "__main__":
    main()
