"""Trains an LSTMModel: python train.py [--flags]. See docs/flags.md for flags.

Running the same command again resumes from the latest checkpoint in
--model_dir.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from lstm_ctl import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
_D, _M, _T = config_lib.DataConfig(), config_lib.ModelConfig(), \
    config_lib.TrainConfig()

flags.DEFINE_enum("task", _D.task, config_lib.TASKS,
                  "sine (built in), text (--text_file) or csv (--csv_file).")
flags.DEFINE_string("model_dir", _T.model_dir,
                    "Checkpoints, config.json and TensorBoard logs go here.")
flags.DEFINE_integer("units", _M.units, "LSTM units per layer.", lower_bound=1)
flags.DEFINE_integer("num_layers", _M.num_layers, "Stacked LSTM layers.",
                     lower_bound=1)
flags.DEFINE_float("dropout", _M.dropout,
                   "Input dropout of each layer, in [0, 1).", lower_bound=0.0)
flags.DEFINE_float("recurrent_dropout", _M.recurrent_dropout,
                   "Recurrent dropout, in [0, 1).", lower_bound=0.0)
flags.DEFINE_enum("initial_state_mode", _M.initial_state_mode,
                  config_lib.INITIAL_STATE_MODES,
                  "zeros, or learned (trainable h0 and c0).")
flags.DEFINE_integer("seq_len", _D.seq_len,
                     "Timesteps per chunk (the truncated-BPTT length).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", _D.batch_size,
                     "Parallel streams per batch.", lower_bound=1)
flags.DEFINE_integer("train_steps", _T.train_steps, "Total training steps.",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", _T.learning_rate, "Adam learning rate.")
flags.DEFINE_enum("lr_schedule", _T.lr_schedule, config_lib.LR_SCHEDULES,
                  "constant, or cosine decay over --train_steps.")
flags.DEFINE_float("clip_norm", _T.clip_norm,
                   "Global gradient norm clipping; 0 turns it off.",
                   lower_bound=0.0)
flags.DEFINE_enum("state_mode", _T.state_mode, config_lib.STATE_MODES,
                  "carry: the state flows from batch to batch (truncated "
                  "BPTT); reset: every shuffled chunk starts from the initial "
                  "state; stored: from the state stored for it (the final "
                  "state of the chunk before it, at its latest visit).")
flags.DEFINE_integer("burn_in", _T.burn_in,
                     "With --state_mode=reset or stored: run each chunk's N "
                     "previous steps first, without loss or gradient.")
flags.DEFINE_integer("reset_every", _T.reset_every,
                     "In carry mode, restart the state every N batches; "
                     "0: only where streams end.", lower_bound=0)
flags.DEFINE_bool("jit_compile", _T.jit_compile,
                  "Compile the train step with XLA.")
flags.DEFINE_enum("precision", _T.precision, config_lib.PRECISIONS,
                  "Dtype policy: float32, mixed_bfloat16 or mixed_float16 "
                  "(compute in 16 bits; weights and state stay float32; "
                  "mixed_float16 scales the loss).")
flags.DEFINE_enum("strategy", _T.strategy, config_lib.STRATEGIES,
                  "default: one device; mirrored: MirroredStrategy over the "
                  "local GPUs (or --cpu_replicas CPU devices); multi_worker: "
                  "MultiWorkerMirroredStrategy configured by TF_CONFIG.")
flags.DEFINE_integer("cpu_replicas", _T.cpu_replicas,
                     "With --strategy=mirrored: split the CPU into N logical "
                     "devices, one replica each (0: use the GPUs).",
                     lower_bound=0)
flags.DEFINE_bool("deterministic", _T.deterministic,
                  "Deterministic ops (tf.config.experimental."
                  "enable_op_determinism): a run resumed after a crash ends "
                  "with bit-identical weights.")
flags.DEFINE_bool("skip_nonfinite", _T.skip_nonfinite,
                  "Skip steps with a NaN or Inf loss (no update; counted in "
                  "TensorBoard as nonfinite_steps) instead of stopping.")
flags.DEFINE_integer("seed", _T.seed, "Seed of data, weights and dropout.")
flags.DEFINE_integer("log_every", _T.log_every,
                     "Steps between progress lines and scalar summaries.",
                     lower_bound=1)
flags.DEFINE_integer("hist_every", _T.hist_every,
                     "Steps between histogram summaries.", lower_bound=1)
flags.DEFINE_integer("checkpoint_every", _T.checkpoint_every,
                     "Steps between checkpoints.", lower_bound=1)
flags.DEFINE_integer("max_to_keep", _T.max_to_keep,
                     "Checkpoints to keep.", lower_bound=1)
flags.DEFINE_integer("eval_every", None,
                     "Steps between validations (held-out carry, reset and "
                     "naive scores; the best checkpoint goes to "
                     "<model_dir>/best). Default: --checkpoint_every; 0: "
                     "off.", lower_bound=0)
flags.DEFINE_integer("early_stopping", _T.early_stopping,
                     "Stop after N validations without a lower held-out "
                     "carry loss (0: never).", lower_bound=0)
flags.DEFINE_string("text_file", None, "--task=text: a UTF-8 text file, a "
                    "directory or a glob; each file is one stream.")
flags.DEFINE_string("csv_file", None, "--task=csv: a CSV file with a header "
                    "row, a directory or a glob (same header in every file).")
flags.DEFINE_list("target_columns", [], "CSV columns to forecast.")
flags.DEFINE_list("input_columns", [], "CSV input columns (default: every "
                  "column other than --time_column and --id_column).")
flags.DEFINE_string("time_column", None, "CSV column of ISO dates/datetimes "
                    "or numbers that orders the rows; never an input.")
flags.DEFINE_string("id_column", None, "CSV column naming the entity of a "
                    "row; each entity is its own stream.")
flags.DEFINE_enum("missing", _D.missing, config_lib.MISSING_MODES,
                  "CSV missing cells: error; ffill (inputs from the last "
                  "value of the stream, a missing target is not trained or "
                  "scored); drop (drop rows with a missing cell).")

flags.register_validator("dropout", lambda v: v < 1.0,
                         "--dropout must be in [0, 1).")
flags.register_validator("recurrent_dropout", lambda v: v < 1.0,
                         "--recurrent_dropout must be in [0, 1).")
flags.register_validator("learning_rate", lambda v: v > 0,
                         "--learning_rate must be > 0.")
flags.register_multi_flags_validator(
    ["strategy", "cpu_replicas"],
    lambda f: f["cpu_replicas"] == 0 or f["strategy"] == "mirrored",
    "--cpu_replicas needs --strategy=mirrored.")
flags.register_multi_flags_validator(
    ["strategy", "cpu_replicas", "batch_size"],
    lambda f: f["strategy"] != "mirrored" or f["cpu_replicas"] == 0
    or f["batch_size"] % f["cpu_replicas"] == 0,
    "--batch_size (the global batch) must be divisible by --cpu_replicas.")
flags.register_validator("burn_in", lambda v: v >= 0,
                         "--burn_in must be >= 0 (0: no burn-in).")
flags.register_multi_flags_validator(
    ["state_mode", "burn_in"],
    lambda f: f["burn_in"] == 0 or f["state_mode"] != "carry",
    "--burn_in needs --state_mode=reset or stored (in carry mode the state "
    "already comes from the previous steps).")
flags.register_multi_flags_validator(
    ["task", "text_file"], lambda f: f["task"] != "text" or f["text_file"],
    "--task=text needs --text_file=PATH (a UTF-8 text file).")
flags.register_multi_flags_validator(
    ["task", "csv_file", "target_columns"],
    lambda f: f["task"] != "csv" or (f["csv_file"] and f["target_columns"]),
    "--task=csv needs --csv_file=PATH and --target_columns=a,b.")


def config_from_flags():
    return config_lib.TrainConfig(
        model_dir=FLAGS.model_dir,
        model=config_lib.ModelConfig(
            units=FLAGS.units, num_layers=FLAGS.num_layers,
            dropout=FLAGS.dropout, recurrent_dropout=FLAGS.recurrent_dropout,
            initial_state_mode=FLAGS.initial_state_mode),
        data=config_lib.DataConfig(
            task=FLAGS.task, seq_len=FLAGS.seq_len,
            batch_size=FLAGS.batch_size, seed=FLAGS.seed,
            text_file=FLAGS.text_file, csv_file=FLAGS.csv_file,
            target_columns=tuple(FLAGS.target_columns),
            input_columns=tuple(FLAGS.input_columns),
            time_column=FLAGS.time_column, id_column=FLAGS.id_column,
            missing=FLAGS.missing),
        train_steps=FLAGS.train_steps, learning_rate=FLAGS.learning_rate,
        lr_schedule=FLAGS.lr_schedule, clip_norm=FLAGS.clip_norm,
        state_mode=FLAGS.state_mode, burn_in=FLAGS.burn_in,
        reset_every=FLAGS.reset_every, jit_compile=FLAGS.jit_compile,
        precision=FLAGS.precision, strategy=FLAGS.strategy,
        cpu_replicas=FLAGS.cpu_replicas, deterministic=FLAGS.deterministic,
        skip_nonfinite=FLAGS.skip_nonfinite, seed=FLAGS.seed,
        log_every=FLAGS.log_every, hist_every=FLAGS.hist_every,
        checkpoint_every=FLAGS.checkpoint_every,
        max_to_keep=FLAGS.max_to_keep, eval_every=FLAGS.eval_every,
        early_stopping=FLAGS.early_stopping)


def _fail(message):
    """One line on stderr, exit code 1 (no help text)."""
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    config = config_from_flags()
    try:
        config_lib.validate(config)
    except ValueError as e:
        _fail(e)
    from lstm_ctl.run import checkpoints  # imports TensorFlow
    from lstm_ctl.train import trainer
    try:
        result = trainer.train(config)
    except (ValueError, FileNotFoundError, trainer.TrainingError,
            checkpoints.CheckpointError) as e:
        # Bad data, a non-finite loss, unreadable checkpoints: one clear
        # line, no traceback (exit code 1).
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    if result["interrupted"] is not None:
        sys.exit(128 + result["interrupted"])  # 130: SIGINT, 143: SIGTERM


if __name__ == "__main__":
    app.run(main)
