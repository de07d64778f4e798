"""Writing a run's files so that a crash never leaves half of one: each is
written beside its final path and moved there in one step. No TensorFlow
here (the config and the data readers use it before TensorFlow starts)."""

import contextlib
import json
import os


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` to write; when the block ends
    without an error it replaces `path` in one step (os.replace), otherwise
    it is removed and `path` keeps its previous contents."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, value, **kwargs):
    """`value` as JSON at `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(value, f, **kwargs)
        f.write("\n")
    return path


def write_bytes(path, data):
    """`data` at `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path
