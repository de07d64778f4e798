"""Evaluates the checkpoints of a run: python evaluate.py --model_dir=DIR.

The model and data come from DIR/config.json (written by train.py), so no
training flag needs repeating. Every flag is a field of
lstm_ctl.config.EvalConfig (see docs/flags.md); `main(argv)` can be called
in process.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging  # noqa: E402

from lstm_ctl import config as config_lib  # noqa: E402

FLAGS = flags.FlagValues()
config_lib.define_flags(FLAGS, config_lib.EvalConfig)


class UsageProblem(ValueError):
    """A flag or a flag combination that cannot work (exit code 1)."""


def prepare(cfg, evaluator):
    """Checks that need the run (before any evaluation), and the output
    directories. Returns the checkpoint that --checkpoint names (None when
    it names none: `Evaluator.restore_default` picks one)."""
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
    _output_dirs(cfg)
    return checkpoint


def _output_dirs(cfg):
    for path in (cfg.predictions_csv, cfg.forecast_csv, cfg.plot,
                 cfg.output_json):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)


def data_file(cfg):
    """The file to evaluate on instead of the run's own (None: its own);
    a flag of the other task is refused."""
    if not (cfg.csv_file or cfg.text_file):
        return None
    from lstm_ctl.data.task_classes import TASKS
    from lstm_ctl.config import ensemble

    task = config_lib.load(ensemble.recorded_dir(cfg.model_dir)).data.task
    flag, path = (("csv_file", cfg.csv_file) if cfg.csv_file
                  else ("text_file", cfg.text_file))
    if flag != getattr(TASKS.get(task), "file_flag", None):
        raise UsageProblem(f"--{flag} is for a {flag[:-5]} run; "
                           f"{cfg.model_dir!r} is a {task!r} run")
    return path


def run(cfg):
    from lstm_ctl.config import ensemble
    members = ensemble.members(cfg.model_dir)
    evaluator, rows = (evaluate_ensemble(cfg, members) if members
                       else evaluate_run(cfg))
    write_results(cfg, evaluator, rows)


def _note(cfg, evaluator):
    if (evaluator.carry_is_reset(cfg.eval_steps)
            and cfg.state_mode != "reset"):
        print("Note: without a warm-up, a hold-out of at most one chunk per "
              "stream gives carry and reset the same numbers here.")


def evaluate_ensemble(cfg, members):
    """`(evaluator, rows)` of an ensemble run: each member at its
    checkpoint, then the members side by side (`--export_dir` exports
    that model)."""
    refused = [f"--{name}" for name in ("all", "watch", "sample")
               if getattr(cfg, name)]
    if cfg.checkpoint not in (None, "", "best", "latest"):
        refused.append("--checkpoint=PATH (each member: best or latest)")
    if refused:
        raise UsageProblem(
            f"{cfg.model_dir!r} is an ensemble of {len(members)} runs "
            f"(train.py --ensemble): {', '.join(refused)} "
            f"{'takes' if len(refused) == 1 else 'take'} one run; "
            f"give it a member's dir, e.g. --model_dir={members[0]}")
    from lstm_ctl.eval.ensemble import Ensemble  # imports TensorFlow

    evaluator = Ensemble(cfg.model_dir, members, cfg.warmup, cfg.forecast,
                         data_file(cfg))
    _output_dirs(cfg)
    _note(cfg, evaluator)
    rows = evaluator.evaluate_members(cfg.checkpoint or None, cfg.state_mode,
                                      cfg.eval_steps, _warn)
    evaluator.close()
    return evaluator, rows


def evaluate_run(cfg):
    """`(evaluator, rows)` of one run's checkpoints."""
    from lstm_ctl.run import checkpoints  # imports TensorFlow
    from lstm_ctl.eval import engine as evaluation
    from lstm_ctl.eval import report

    evaluator = evaluation.Evaluator(cfg.model_dir, cfg.warmup,
                                     cfg.forecast, data_file(cfg))
    checkpoint = prepare(cfg, evaluator)
    metric = evaluator.task.metric
    _note(cfg, evaluator)
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
                print(report.format_table(new, metric), flush=True)
    elif checkpoint:
        rows = evaluator.evaluate_checkpoint(checkpoint, cfg.state_mode,
                                             cfg.eval_steps)
    else:
        path = evaluator.restore_default(_warn)
        rows = evaluator.evaluate_checkpoint(path, cfg.state_mode,
                                             cfg.eval_steps, restore=False)
    evaluator.close()
    return evaluator, rows


def write_results(cfg, evaluator, rows):
    """The table, warnings, JSON, CSV files, figure, sample and export of
    the evaluated rows."""
    from lstm_ctl.eval import engine as evaluation
    from lstm_ctl.eval import report

    if not cfg.watch:
        print(report.format_table(rows, evaluator.task.metric))
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
    """Runs evaluate.py with `argv` (parsed into FLAGS here)."""
    config_lib.parse_flags(FLAGS, argv, "evaluate.py")
    logging.set_verbosity(logging.WARNING)
    cfg = config_lib.from_flags(FLAGS, config_lib.EvalConfig)
    problems = config_lib.eval_problems(cfg)
    if problems:
        _fail("; ".join(problems))
    from lstm_ctl.run.checkpoints import CheckpointError
    try:
        run(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        _fail(e)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
