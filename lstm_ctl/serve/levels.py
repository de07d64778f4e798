"""The last known level of each stream, beside its LSTM state in a
StatePool, for a run trained on the changes of its targets
(`--target_transform=changes`, lstm_ctl/data/transforms.py).

Such a model reads and forecasts changes, while a client sends and gets
levels: the server turns each row's target columns into changes against
the level before it and sums the forecast change back onto the row's level
(`data.units.Units`). The level before a stream's next row is therefore part
of the stream's state: kept per slot here (`[dim]` float64, NaN: unknown,
as for a stream that has sent no row since it joined or was reset), read
and set with the state, written into snapshots, moved with the stream.

A pool of a levels run keeps none (`dim` 0): its snapshots, answers and
hooks stay as they were.
"""

import numpy as np

SNAPSHOT_KEY = "levels"


class LevelStore:
    """`[capacity, dim]` float64 levels by slot; NaN: unknown."""

    def __init__(self, capacity, dim=0):
        if isinstance(dim, bool) or int(dim) != dim or dim < 0:
            raise ValueError(f"level_dim must be an integer >= 0; got "
                             f"{dim!r}.")
        self.dim = int(dim)
        self._levels = np.full([capacity, self.dim], np.nan)

    def __bool__(self):
        return self.dim > 0

    def check(self, level, nan_unknown=True):
        """A level given for one stream -> `[dim]` float64 (NaN: unknown),
        or None (unknown); a ValueError says what is wrong. `level` is None
        or `dim` numbers, each a finite number or None (unknown; NaN too,
        as `get` gives it, unless `nan_unknown` is False)."""
        if level is None:
            return None
        if not self.dim:
            raise ValueError(
                "this run forecasts levels: its streams keep no level (give "
                "no \"level\", or null).")
        expected = (f"a level must be null or a list of {self.dim} values "
                    "(the last known value of each target column, in data "
                    "units), each a finite number or null (unknown)")
        values = list(level) if isinstance(level, (list, tuple, np.ndarray)) \
            else None
        if values is None or len(values) != self.dim:
            raise ValueError(f"{expected}; got {_short(level)}.")
        out = np.full(self.dim, np.nan)
        for j, v in enumerate(values):
            if v is None or (nan_unknown and isinstance(
                    v, (float, np.floating)) and np.isnan(v)):
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(
                    v, (int, float, np.integer, np.floating)) or \
                    not np.isfinite(v):
                raise ValueError(f"{expected}; value {j} is {v!r}.")
            out[j] = float(v)
        return out

    def check_rows(self, levels, batch):
        """Levels given to a step -> `[batch, dim]` float64 or None."""
        if levels is None:
            return None
        levels = np.asarray(levels, np.float64)
        if not self.dim or levels.shape != (batch, self.dim):
            raise ValueError(
                f"levels must be [{batch}, {self.dim}] (one level per "
                "stream" + ("" if self.dim else "; this pool keeps none")
                + f"); got shape {list(levels.shape)}.")
        return levels

    def get(self, slot):
        return self._levels[slot].copy()

    def set(self, slot, level=None):
        """Sets the slot's level (None: unknown)."""
        if self.dim:
            self._levels[slot] = np.nan if level is None else level

    def set_rows(self, slots, levels):
        """After a step: `levels` `[B, dim]`, one per slot of `slots`."""
        if self.dim and levels is not None:
            self._levels[np.asarray(slots)] = np.asarray(levels, np.float64)

    # ------------------------------------------------------------ snapshot
    def snapshot(self, slots):
        """The snapshot arrays of `slots` (none without levels)."""
        if not self.dim:
            return {}
        return {SNAPSHOT_KEY: self._levels[np.asarray(slots, np.int64)]}

    def restore(self, data, count, path):
        """Takes the levels of the `count` streams of a snapshot's arrays
        `data` (into slots 0 to count - 1); a ValueError when the snapshot
        holds levels of another size (or none, or some where none are
        kept)."""
        saved = data.get(SNAPSHOT_KEY)
        if saved is None and not self.dim:
            return
        if saved is None or saved.shape != (count, self.dim):
            held = ("no levels (written for a run that forecasts levels)"
                    if saved is None else
                    f"levels of {saved.shape[-1]} target column(s)")
            kept = (f"{self.dim} target column(s) (a run trained on "
                    "changes)" if self.dim else "none (a run that forecasts "
                    "levels)")
            raise ValueError(f"snapshot {path} holds {held}; this pool "
                             f"keeps {kept}: restore it with the run that "
                             "wrote it.")
        self._levels[:] = np.nan
        self._levels[:count] = saved


def level_json(level):
    """`[dim]` float64 -> a JSON list (null: unknown)."""
    return [None if np.isnan(v) else float(v) for v in level]


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
