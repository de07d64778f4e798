"""What a long run shows and how it stops: progress lines, scalar windows,
and SIGINT/SIGTERM turned into a clean stop."""

import contextlib
import signal
import threading
import time

import numpy as np


def clock(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Averages step metrics over a window; prints and logs each window."""

    def __init__(self, print_fn, writer, total_steps, start_step, batch_size,
                 metric, label=""):
        self.print, self.writer = print_fn, writer
        self.total, self.start = total_steps, start_step
        self.batch_size, self.metric = batch_size, metric
        self.label = f"  |  {label}" if label else ""  # e.g. the state mode
        self.window = []
        self.note = ""  # e.g. the last held-out loss, shown on each line
        self.t0 = self.window_start = time.perf_counter()

    def add(self, metrics):
        self.window.append({k: float(v) for k, v in metrics.items()})

    def flush(self, step, extra=None):
        """Writes the window's means at `step` and prints a progress line."""
        now = time.perf_counter()
        finite = [w for w in self.window if np.isfinite(w["loss"])]
        rows = finite or self.window
        mean = {k: float(np.mean([w[k] for w in rows])) for k in rows[0]}
        steps_per_sec = len(self.window) / max(now - self.window_start, 1e-9)
        mean["steps_per_sec"] = steps_per_sec
        mean["examples_per_sec"] = steps_per_sec * self.batch_size
        mean.update(extra or {})
        self.writer.scalars(step, mean)
        self.writer.flush()
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        left = (self.total - step) / max(rate, 1e-9)
        self.print(
            f"step {step}/{self.total}  loss {mean['loss']:.5f}  "
            f"{self.metric} {mean[self.metric]:.4f}  |  "
            f"{steps_per_sec:.1f} steps/s  {mean['examples_per_sec']:.0f} "
            f"ex/s  |  left {clock(left)}"
            + (f"  |  {self.note}" if self.note else "") + self.label)
        self.window, self.window_start = [], now

    @property
    def seconds(self):
        return time.perf_counter() - self.t0


@contextlib.contextmanager
def stop_on_signals():
    """Yields a list that receives SIGINT/SIGTERM instead of dying at once.

    The training loop finishes its step, saves a checkpoint and returns. A
    second signal stops at once (the last complete checkpoint stays intact).
    """
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    signums = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signums}

    def handler(signum, frame):
        if received:
            signal.signal(signum, previous[signum] or signal.SIG_DFL)
            raise KeyboardInterrupt
        received.append(signum)

    for s in signums:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s in signums:
            signal.signal(s, previous[s])
