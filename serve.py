"""Serves a trained run to many live streams, one LSTM state each:
python serve.py --model_dir=DIR --port=8500. See docs/serving.md.

SIGTERM (or Ctrl-C) stops accepting, finishes the requests in flight,
writes a snapshot to --snapshot_dir and exits 0; started again with the
same --snapshot_dir, every stream continues where it was.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from lstm_ctl import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
_S = config_lib.ServeConfig()

flags.DEFINE_string("model_dir", None, "A model dir written by train.py.")
flags.DEFINE_string("checkpoint", _S.checkpoint, "latest, best (the "
                    "checkpoint in <model_dir>/best/) or a checkpoint path.")
flags.DEFINE_string("host", _S.host, "Address to listen on (loopback "
                    "unless told otherwise).")
flags.DEFINE_integer("port", _S.port, "Port to listen on (0: any free "
                     "port; the one taken is printed).", lower_bound=0,
                     upper_bound=65535)
flags.DEFINE_integer("capacity", _S.capacity, "Streams held at once; a new "
                     "stream beyond it gets 503 with Retry-After.",
                     lower_bound=1)
flags.DEFINE_float("idle_timeout", _S.idle_timeout, "Evict a stream after "
                   "this many seconds without a request (0: never).",
                   lower_bound=0.0)
flags.DEFINE_string("snapshot_dir", _S.snapshot_dir, "Restore the streams "
                    "from here at start, snapshot them here periodically "
                    "and on SIGTERM.")
flags.DEFINE_float("snapshot_every", _S.snapshot_every, "Seconds between "
                   "snapshots (0: only on SIGTERM); SIGKILL loses at most "
                   "the steps since the last one.", lower_bound=0.0)
flags.DEFINE_float("max_wait_ms", _S.max_wait_ms, "Milliseconds a step "
                   "waits for requests of other streams to join its batch.",
                   lower_bound=0.0)
flags.DEFINE_string("auth_token_file", _S.auth_token_file, "A file holding "
                    "a token; requests then need 'Authorization: Bearer "
                    "<token>' (all but /healthz).")
flags.DEFINE_integer("max_body_bytes", _S.max_body_bytes, "Largest request "
                     "body accepted (413 beyond).", lower_bound=1)
flags.DEFINE_integer("max_rows", _S.max_rows, "Most timesteps in one step "
                     "request.", lower_bound=1)
flags.mark_flag_as_required("model_dir")


def config_from_flags():
    return config_lib.ServeConfig(
        model_dir=FLAGS.model_dir, checkpoint=FLAGS.checkpoint,
        host=FLAGS.host, port=FLAGS.port, capacity=FLAGS.capacity,
        idle_timeout=FLAGS.idle_timeout, snapshot_dir=FLAGS.snapshot_dir,
        snapshot_every=FLAGS.snapshot_every, max_wait_ms=FLAGS.max_wait_ms,
        auth_token_file=FLAGS.auth_token_file,
        max_body_bytes=FLAGS.max_body_bytes, max_rows=FLAGS.max_rows)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    config = config_from_flags()
    try:
        config_lib.validate_serve(config)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    from lstm_ctl.run.checkpoints import CheckpointError  # TensorFlow
    from lstm_ctl.serve import server
    try:
        server.serve(config)
    except (ValueError, FileNotFoundError, CheckpointError, OSError) as e:
        print(f"serve.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
