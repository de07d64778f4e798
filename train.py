"""Trains an LSTMModel: python train.py [--flags]. See docs/flags.md for flags.

Running the same command again resumes from the latest checkpoint in
--model_dir. Every flag is a field of lstm_ctl.config.TrainConfig (its
default, help and check are written there once); the settings of a run that
are not given are chosen from its data (lstm_ctl/config/defaults.py, said in
one line and recorded in config.json). Flags and data are checked
before TensorFlow is imported, so a mistake costs a second, not ten.
`main(argv)` can be called in process (the tests do): it parses `argv` into
this module's own FLAGS.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

from absl import flags, logging  # noqa: E402

from lstm_ctl import config as config_lib  # noqa: E402

from lstm_ctl.config import defaults  # noqa: E402

FLAGS = flags.FlagValues()
config_lib.define_flags(
    FLAGS, config_lib.TrainConfig, chosen=defaults.CHOSEN,
    chosen_help="Default: chosen from the data (docs/forecasting.md).")


def _fail(message):
    """One line on stderr and exit code 1: no help dump, no traceback."""
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def resolve(config, out=None):
    """`(config, chosen)`: the settings not given filled in (recorded by a
    resumed run, else chosen from the data), said in one line on `out`."""
    config, chosen, line = defaults.resolve_and_describe(config)
    if line:
        print(line, file=out or sys.stdout, flush=True)
    return config, chosen


def main(argv):
    """Runs train.py with `argv` (parsed into FLAGS here)."""
    config_lib.parse_flags(FLAGS, argv, "train.py")
    logging.set_verbosity(logging.WARNING)
    config = config_lib.from_flags(FLAGS, config_lib.TrainConfig)
    try:
        # Flags first; a setting left to the data is checked at its fixed
        # value here, and again once chosen.
        config_lib.validate(defaults.with_fixed(config))
        config = config_lib.with_saved_input_columns(config)
        config, _ = resolve(config)
        config_lib.validate(config)
        from lstm_ctl.config import ensemble
        ensemble.check(config.model_dir, config.ensemble)
        # Bad data stops here, before TensorFlow is imported.
        from lstm_ctl.data import tasks
        task = tasks.build_task(config.data, "train", config.model_dir,
                                state_mode=config.state_mode,
                                validate_on=config.validate_on)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    from lstm_ctl.run import checkpoints  # imports TensorFlow
    from lstm_ctl.train import trainer
    try:
        result = trainer.train(config, task=task)
    except (ValueError, FileNotFoundError, trainer.TrainingError,
            checkpoints.CheckpointError) as e:
        # A resume mismatch, a non-finite loss, unreadable checkpoints.
        _fail(e)
    if result["interrupted"] is not None:
        sys.exit(128 + result["interrupted"])  # 130: SIGINT, 143: SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
