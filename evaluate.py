"""Evaluates the checkpoints of a run: python evaluate.py --model_dir=DIR.

The model and data come from DIR/config.json (written by train.py), so no
training flag needs repeating. See docs/flags.md for the flags.
"""

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from lstm_ctl import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
_E = config_lib.EvalConfig()
flags.DEFINE_string("model_dir", None, "A model dir written by train.py.")
flags.DEFINE_string("checkpoint", None, "Evaluate this checkpoint: a path, "
                    "best (the best by held-out loss, kept in "
                    "<model_dir>/best) or latest (the default).")
flags.DEFINE_bool("all", False, "Evaluate every checkpoint, oldest first, "
                  "writing eval summaries at each checkpoint's step.")
flags.DEFINE_bool("watch", False, "Evaluate each new checkpoint as it "
                  "appears, until --watch_timeout seconds pass without one.")
flags.DEFINE_float("watch_timeout", _E.watch_timeout, "Seconds to wait for "
                   "a new checkpoint in --watch mode.")
flags.DEFINE_enum("state_mode", _E.state_mode, config_lib.EVAL_MODES,
                  "carry: the state flows over the whole eval stream; "
                  "reset: it restarts at every chunk; both: side by side.")
flags.DEFINE_string("warmup", None,
                    "history: each stream's hold-out starts from the state "
                    "its history left (one lane per stream; sine: the first "
                    "half of each eval signal); N: from the state of only "
                    "its last N history rows; none: from the initial state. "
                    "Default: history for csv and text, none for sine.")
flags.DEFINE_string("predictions_csv", None, "Write the one-step "
                    "predictions of the hold-out here (data units).")
flags.DEFINE_integer("forecast", 0, "Forecast this many steps, feeding "
                     "each prediction back (needs every input column to be "
                     "a target); reports forecast RMSE on the hold-out "
                     "(sine, csv).")
flags.DEFINE_string("forecast_csv", None, "Write the --forecast steps after "
                    "each whole series here (data units).")
flags.DEFINE_string("plot", None, "Also write the predictions figure to "
                    "this PNG file.")
flags.DEFINE_integer("eval_steps", 0, "Chunks of the eval stream to use "
                     "(0: all).")
flags.DEFINE_string("output_json", None, "Also write the rows and the "
                    "warnings here.")
flags.DEFINE_integer("sample", 0, "Text task: generate this many "
                     "characters with model.step.")
flags.DEFINE_string("prime", _E.prime, "Text task: the text to start "
                    "sampling from.")
flags.DEFINE_float("temperature", _E.temperature, "Sampling temperature "
                   "(> 0).")
flags.DEFINE_integer("seed", None, "Seed of --sample (default: the run's "
                     "seed, so the same call gives the same text).")
flags.DEFINE_string("export_dir", None, "Export the evaluated checkpoint as "
                    "a SavedModel (serve, step, initial_state) plus "
                    "step.tflite here.")
flags.DEFINE_string("csv_file", None, "Evaluate a csv run on this file (a "
                    "file, a directory or a glob) with the columns it was "
                    "trained on, instead of its own.")
flags.DEFINE_string("text_file", None, "Evaluate a text run on this file "
                    "(a file, a directory or a glob) instead of its own.")


class UsageProblem(ValueError):
    """A flag or a flag combination that cannot work (exit code 1)."""


def config_from_flags():
    return config_lib.EvalConfig(**{
        f.name: getattr(FLAGS, f.name)
        for f in dataclasses.fields(config_lib.EvalConfig)})


def prepare(cfg, evaluator):
    """Checks that need the run (before any evaluation), and the output
    directories. Returns the checkpoint to evaluate (None: latest)."""
    from lstm_ctl.run import checkpoints

    problems = []
    task = evaluator.task
    if cfg.sample:
        if task.vocab is None:
            problems.append(f"--sample generates text; this run's task is "
                            f"{task.name!r}")
        else:
            unknown = sorted(set(cfg.prime) - set(task.vocab))
            if unknown:
                problems.append(f"--prime has characters that are not in "
                                f"the model's vocabulary: {unknown}")
    checkpoint = None
    if cfg.checkpoint:
        try:
            checkpoint = checkpoints.require_checkpoint(cfg.model_dir,
                                                        cfg.checkpoint)
        except FileNotFoundError as e:
            problems.append(str(e))
    if problems:
        raise UsageProblem("; ".join(problems))
    for path in (cfg.predictions_csv, cfg.forecast_csv, cfg.plot,
                 cfg.output_json):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    return checkpoint


def data_file(cfg):
    """The file to evaluate on instead of the run's own (None: its own);
    a flag of the other task is refused."""
    if not (cfg.csv_file or cfg.text_file):
        return None
    task = config_lib.load(cfg.model_dir).data.task
    flag, path = (("csv_file", cfg.csv_file) if cfg.csv_file
                  else ("text_file", cfg.text_file))
    if flag != f"{task}_file":
        raise UsageProblem(f"--{flag} is for a {flag[:-5]} run; "
                           f"{cfg.model_dir!r} is a {task!r} run")
    return path


def run(cfg):
    from lstm_ctl.run import checkpoints  # imports TensorFlow
    from lstm_ctl.eval import engine as evaluation

    evaluator = evaluation.Evaluator(cfg.model_dir, cfg.warmup,
                                     cfg.forecast, data_file(cfg))
    checkpoint = prepare(cfg, evaluator)
    metric = evaluator.task.metric
    chunks = (evaluator.arrays.steps // evaluator.config.data.seq_len
              if evaluator.arrays is not None else 0)
    if chunks == 1 and cfg.state_mode != "reset":
        print("Note: the eval stream holds one chunk per stream, so carry "
              "and reset give the same numbers here.")
    rows = []
    if cfg.watch or cfg.all:
        if cfg.watch:
            paths = evaluation.watch(cfg.model_dir, cfg.watch_timeout)
            print(f"Watching {cfg.model_dir} for new checkpoints (stops "
                  f"after {cfg.watch_timeout:.0f} s without one).",
                  flush=True)
        else:
            paths = evaluation.all_checkpoints(cfg.model_dir)
        for path in paths:
            try:
                new = evaluator.evaluate_checkpoint(path, cfg.state_mode,
                                                    cfg.eval_steps)
            except checkpoints.CheckpointError as e:
                # Corrupt, or deleted by max_to_keep since it was listed.
                _warn(f"Warning: skipped: {e}")
                continue
            rows += new
            if cfg.watch:
                print(evaluation.format_table(new, metric), flush=True)
    elif checkpoint:
        rows = evaluator.evaluate_checkpoint(checkpoint, cfg.state_mode,
                                             cfg.eval_steps)
    else:
        path = evaluator.restore_latest(_warn)
        rows = evaluator.evaluate_checkpoint(path, cfg.state_mode,
                                             cfg.eval_steps, restore=False)
    evaluator.close()
    if not cfg.watch:
        print(evaluation.format_table(rows, metric))
    for line in evaluator.warnings:
        print(f"Warning: {line}")
    if rows:
        logdir = evaluation.eval_logdir(cfg.model_dir,
                                        holdout_name(evaluator))
        print(f"Eval summaries: {logdir}")
    if cfg.output_json:
        with open(cfg.output_json, "w") as f:
            json.dump({"rows": rows, "warnings": evaluator.warnings}, f,
                      indent=2)
        print(f"Wrote {cfg.output_json}")
    if evaluator.last is not None:
        for path in evaluator.write_outputs(cfg.predictions_csv,
                                            cfg.forecast_csv, cfg.plot):
            print(f"Wrote {path}")
    if cfg.sample and rows:
        seed = evaluator.config.seed if cfg.seed is None else cfg.seed
        text = evaluation.sample_text(evaluator.model, evaluator.task,
                                      cfg.prime, cfg.sample,
                                      cfg.temperature, seed=seed)
        print(f"--- {cfg.sample} characters from {rows[-1]['checkpoint']}"
              f" at temperature {cfg.temperature}:\n{cfg.prime}{text}")
    if cfg.export_dir:
        from lstm_ctl.serve import export
        saved, tflite = export.export(evaluator.model, cfg.export_dir)
        print(f"Exported SavedModel to {saved} and TFLite to {tflite}")


def holdout_name(evaluator):
    from lstm_ctl.run import holdout
    return holdout.warmup_name(evaluator.warmup)


def _warn(line):
    print(line, file=sys.stderr, flush=True)


def _fail(message):
    """One line on stderr, exit code 1 (no help text)."""
    print(f"evaluate.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    cfg = config_from_flags()
    problems = config_lib.eval_problems(cfg)
    if problems:
        _fail("; ".join(problems))
    from lstm_ctl.run.checkpoints import CheckpointError
    try:
        run(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        _fail(e)


if __name__ == "__main__":
    app.run(main)
