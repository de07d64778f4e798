"""What serve.py is asked to do: `ServeConfig`, one field per flag."""

import dataclasses
from typing import Optional

from lstm_ctl.config.fields import (
    AT_LEAST_0, AT_LEAST_1, field_problems, setting)

@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What serve.py's flags set (each field is a flag); not saved."""
    model_dir: Optional[str] = setting(None, "A model dir written by "
                                       "train.py.")
    checkpoint: str = setting("latest", "latest, best (the checkpoint in "
                              "<model_dir>/best/) or a checkpoint path.")
    host: str = setting("127.0.0.1", "Address to listen on (loopback unless "
                        "told otherwise).")
    port: int = setting(8500, "Port to listen on (0: any free port; the one "
                        "taken is printed).",
                        (lambda v: 0 <= v < 65536, "in [0, 65535]"))
    capacity: int = setting(10000, "Streams held at once; a new stream "
                            "beyond it gets 503 with Retry-After.",
                            AT_LEAST_1)
    idle_timeout: float = setting(0.0, "Evict a stream after this many "
                                  "seconds without a request (0: never).",
                                  AT_LEAST_0)
    snapshot_dir: Optional[str] = setting(
        None, "Restore the streams from here at start, snapshot them here "
        "periodically and on SIGTERM.")
    snapshot_every: float = setting(
        60.0, "Seconds between snapshots (0: only on SIGTERM); SIGKILL loses "
        "at most the steps since the last one.", AT_LEAST_0)
    max_wait_ms: float = setting(2.0, "Milliseconds a step waits for "
                                 "requests of other streams to join its "
                                 "batch.", AT_LEAST_0)
    auth_token_file: Optional[str] = setting(
        None, "A file holding a token; requests then need 'Authorization: "
        "Bearer <token>' (all but /healthz).")
    max_body_bytes: int = setting(1 << 20, "Largest request body accepted "
                                  "(413 beyond).", AT_LEAST_1)
    max_rows: int = setting(1000, "Most timesteps in one step request.",
                            AT_LEAST_1)


def validate_serve(config):
    """Raises one ValueError naming every bad serve.py setting."""
    found = field_problems(config)
    if not config.model_dir:
        found.insert(0, "--model_dir is required (a model dir written by "
                        "train.py)")
    else:
        from lstm_ctl.config import ensemble
        problem = ensemble.unmerged(config.model_dir)
        if problem:
            found.append(f"--model_dir: {problem}")
    if found:
        raise ValueError("; ".join(found))
    return config
