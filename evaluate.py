"""Evaluates the checkpoints of a run: python evaluate.py --model_dir=DIR.

The model and data come from DIR/config.json (written by train.py), so no
training flag needs repeating. See docs/flags.md for the flags.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from lstm_ctl import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A model dir written by train.py.")
flags.DEFINE_string("checkpoint", None,
                    "Evaluate this checkpoint (default: the latest).")
flags.DEFINE_bool("all", False, "Evaluate every checkpoint, oldest first, "
                  "writing eval summaries at each checkpoint's step.")
flags.DEFINE_bool("watch", False, "Evaluate each new checkpoint as it "
                  "appears, until --watch_timeout seconds pass without one.")
flags.DEFINE_float("watch_timeout", 600.0, "Seconds to wait for a new "
                   "checkpoint in --watch mode.", lower_bound=0.0)
flags.DEFINE_enum("state_mode", "both", config_lib.EVAL_MODES,
                  "carry: the state flows over the whole eval stream; "
                  "reset: it restarts at every chunk; both: side by side.")
flags.DEFINE_enum("warmup", None, ["history", "none"],
                  "history: each stream's hold-out starts from the state its "
                  "history left (one lane per stream; sine: the first half "
                  "of each eval signal); none: from the initial state. "
                  "Default: history for csv and text, none for sine.")
flags.DEFINE_string("predictions_csv", None, "Write the one-step "
                    "predictions of the hold-out here (data units).")
flags.DEFINE_integer("forecast", 0, "Forecast this many steps, feeding "
                     "each prediction back (needs every input column to be "
                     "a target); reports forecast RMSE on the hold-out "
                     "(sine, csv).",
                     lower_bound=0)
flags.DEFINE_string("forecast_csv", None, "Write the --forecast steps after "
                    "each whole series here (data units).")
flags.DEFINE_string("plot", None, "Also write the predictions figure to "
                    "this PNG file.")
flags.DEFINE_integer("eval_steps", 0, "Chunks of the eval stream to use "
                     "(0: all).", lower_bound=0)
flags.DEFINE_string("output_json", None, "Also write the numbers here.")
flags.DEFINE_integer("sample", 0, "Text task: generate this many "
                     "characters with model.step.", lower_bound=0)
flags.DEFINE_string("prime", "\n", "Text task: the text to start sampling "
                    "from.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
flags.DEFINE_string("export_dir", None, "Export the evaluated checkpoint as "
                    "a SavedModel (serve, step, initial_state) plus "
                    "step.tflite here.")
flags.mark_flag_as_required("model_dir")
flags.register_validator("temperature", lambda v: v > 0,
                         "--temperature must be > 0.")
flags.register_multi_flags_validator(
    ["forecast_csv", "forecast"],
    lambda f: not f["forecast_csv"] or f["forecast"] > 0,
    "--forecast_csv needs --forecast=H (the number of steps, > 0).")
flags.register_multi_flags_validator(
    ["all", "watch", "checkpoint"],
    lambda f: sum([bool(f["all"]), bool(f["watch"]),
                   bool(f["checkpoint"])]) <= 1,
    "--all, --watch and --checkpoint exclude each other.")


def run():
    from lstm_ctl.run import checkpoints  # imports TensorFlow
    from lstm_ctl.eval import engine as evaluation

    evaluator = evaluation.Evaluator(FLAGS.model_dir, FLAGS.warmup,
                                     FLAGS.forecast)
    metric = evaluator.task.metric
    chunks = (evaluator.arrays.steps // evaluator.config.data.seq_len
              if evaluator.arrays is not None else 0)
    if chunks == 1 and FLAGS.state_mode != "reset":
        print("Note: the eval stream holds one chunk per stream, so carry "
              "and reset give the same numbers here.")
    rows = []
    if FLAGS.watch or FLAGS.all:
        if FLAGS.watch:
            paths = evaluation.watch(FLAGS.model_dir, FLAGS.watch_timeout)
            print(f"Watching {FLAGS.model_dir} for new checkpoints (stops "
                  f"after {FLAGS.watch_timeout:.0f} s without one).",
                  flush=True)
        else:
            paths = evaluation.all_checkpoints(FLAGS.model_dir)
        for path in paths:
            try:
                new = evaluator.evaluate_checkpoint(path, FLAGS.state_mode,
                                                    FLAGS.eval_steps)
            except checkpoints.CheckpointError as e:
                # Corrupt, or deleted by max_to_keep since it was listed.
                _warn(f"Warning: skipped: {e}")
                continue
            rows += new
            if FLAGS.watch:
                print(evaluation.format_table(new, metric), flush=True)
    elif FLAGS.checkpoint:
        checkpoints.require_checkpoint(FLAGS.model_dir, FLAGS.checkpoint)
        rows = evaluator.evaluate_checkpoint(FLAGS.checkpoint,
                                             FLAGS.state_mode,
                                             FLAGS.eval_steps)
    else:
        path = evaluator.restore_latest(_warn)
        rows = evaluator.evaluate_checkpoint(path, FLAGS.state_mode,
                                             FLAGS.eval_steps, restore=False)
    evaluator.close()
    if not FLAGS.watch:
        print(evaluation.format_table(rows, metric))
    if rows:
        print(f"Eval summaries: {os.path.join(FLAGS.model_dir, 'eval')}")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"Wrote {FLAGS.output_json}")
    if evaluator.last is not None:
        for path in evaluator.write_outputs(FLAGS.predictions_csv,
                                            FLAGS.forecast_csv, FLAGS.plot):
            print(f"Wrote {path}")
    if FLAGS.sample and rows:
        text = evaluation.sample_text(evaluator.model, evaluator.task,
                                    FLAGS.prime, FLAGS.sample,
                                    FLAGS.temperature,
                                    seed=evaluator.config.seed)
        print(f"--- {FLAGS.sample} characters from {rows[-1]['checkpoint']}"
              f" at temperature {FLAGS.temperature}:\n{FLAGS.prime}{text}")
    if FLAGS.export_dir:
        from lstm_ctl.serve import export
        saved, tflite = export.export(evaluator.model, FLAGS.export_dir)
        print(f"Exported SavedModel to {saved} and TFLite to {tflite}")


def _warn(line):
    print(line, file=sys.stderr, flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from lstm_ctl.run.checkpoints import CheckpointError
    try:
        run()
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
