"""StatePool snapshots on disk: an .npz of every stream's id, step count
and state, written so that a crash (SIGKILL included) leaves the previous
snapshot whole: a temporary file beside it, flushed to disk, renamed over
it, and the directory flushed."""

import os
import zipfile

import numpy as np

from lstm_ctl import files

FORMAT = 1


def write(path, arrays):
    """Writes `arrays` (name -> array) to `path` atomically and durably."""
    path = os.path.abspath(path)
    with files.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, format=np.array(FORMAT), **arrays)
            f.flush()
            os.fsync(f.fileno())
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read(path, units, num_layers):
    """The arrays of snapshot `path`; a ValueError when it cannot be read
    or holds states of another shape than `num_layers` layers of `units`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"snapshot {path} cannot be read ({e}); move it "
                         "away to start with no streams.") from None
    if int(data.get("format", -1)) != FORMAT:
        raise ValueError(f"snapshot {path} is not a StatePool snapshot of "
                         f"format {FORMAT}.")
    if (int(data["units"]), int(data["num_layers"])) != (units, num_layers):
        raise ValueError(
            f"snapshot {path} holds states of {int(data['num_layers'])} "
            f"layer(s) of {int(data['units'])} units; this pool's model has "
            f"{num_layers} of {units}.")
    return data
