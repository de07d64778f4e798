"""Serves a trained run to many live streams, one LSTM state each:
python serve.py --model_dir=DIR --port=8500. See docs/serving.md.

SIGTERM (or Ctrl-C) stops accepting, finishes the requests in flight,
writes a snapshot to --snapshot_dir and exits 0; started again with the
same --snapshot_dir, every stream continues where it was.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

from absl import flags, logging  # noqa: E402

from lstm_ctl import config as config_lib  # noqa: E402

FLAGS = flags.FlagValues()
config_lib.define_flags(FLAGS, config_lib.ServeConfig)


def main(argv):
    """Runs serve.py with `argv` (parsed into FLAGS here)."""
    config_lib.parse_flags(FLAGS, argv, "serve.py")
    logging.set_verbosity(logging.WARNING)
    config = config_lib.from_flags(FLAGS, config_lib.ServeConfig)
    try:
        config_lib.validate_serve(config)
    except ValueError as e:
        print(f"serve.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    from lstm_ctl.run.checkpoints import CheckpointError  # TensorFlow
    from lstm_ctl.serve import server
    try:
        server.serve(config)
    except (ValueError, FileNotFoundError, CheckpointError, OSError) as e:
        print(f"serve.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
