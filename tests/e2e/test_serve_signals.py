"""serve.py as a process: killed by SIGKILL it loses at most the steps
since its last periodic snapshot (and says so through `steps`); stopped by
SIGTERM it finishes what is in flight, snapshots and exits 0; started again
from the snapshot, every stream continues exactly. (The restart after the
SIGKILL is a serve.py process; the one after the SIGTERM is the same Server
on a thread of this process, which restores a snapshot as serve.py does,
without another ~6 s of TensorFlow import.)"""

import signal
import threading
import time

import numpy as np
import pytest

from lstm_ctl.serve import loading
from helpers import offline_many
from serve_process import ServeProcess as Process, ServerThread, \
    as_state

pytestmark = pytest.mark.slow
LONG = 4000  # rows of a request that takes a while to run


@pytest.fixture(scope="module")
def served(serve_run_dir):
    return loading.load(serve_run_dir)


def check_state(served, reply, rows):
    """The state `reply` shows equals the model's after `rows`."""
    offline_many(served.model, [(None, rows)])
    for got, want in zip(as_state(reply["state"]),
                         offline_many.final_state):
        np.testing.assert_allclose(got.h, want.h[0], atol=1e-5)
        np.testing.assert_allclose(got.c, want.c[0], atol=1e-5)


def test_sigkill_loses_only_the_steps_since_the_snapshot_and_sigterm_none(
        served, serve_run_dir, tmp_path, free_port):
    x = np.random.default_rng(3).uniform(-1, 1, (2, LONG + 5, 1))
    snapshots = tmp_path / "snapshots"
    a = Process(serve_run_dir, snapshots, free_port(),
                "--snapshot_every=0.3")
    try:
        a.step("k", x[0, :3])
        a.step("t", x[1, :2])
        seen = a.snapshots()
        deadline = time.monotonic() + 30
        while a.snapshots() == seen and time.monotonic() < deadline:
            time.sleep(0.05)  # a snapshot after those steps
        a.step("k", x[0, 3:5])
    finally:
        a.proc.kill()  # SIGKILL
        a.proc.communicate()

    b = Process(serve_run_dir, snapshots, free_port(), "--snapshot_every=0",
                f"--max_rows={LONG}")
    k = b.call("GET", "/v1/streams/k/state")
    assert k["steps"] in (3, 5)  # 5 when a snapshot came before the kill
    check_state(served, k, x[0, :k["steps"]])
    n = k["steps"]
    reply = b.step("k", x[0, n:8])
    want, = offline_many(served.model, [(None, x[0, :8])])
    np.testing.assert_allclose(reply["outputs"], want[n:], atol=1e-5)
    assert reply["steps"] == 8

    # SIGTERM while a long request of "t" is in flight: it is answered,
    # and the snapshot holds its steps. (Its rows take seconds alone, and
    # several times that beside the other worker's tests: the reply may
    # take longer than the 30 s of a short request.)
    answered = []
    sender = threading.Thread(target=lambda: answered.append(
        b.step("t", x[1, 2:LONG + 2], timeout=120)))
    sender.start()
    deadline = time.monotonic() + 30
    while b.metric("lstm_ctl_requests_in_flight") < 1:
        assert time.monotonic() < deadline and sender.is_alive()
        time.sleep(0.005)
    code, out = b.stop(signal.SIGTERM)
    sender.join(120)
    assert code == 0, out
    assert "Stopped; snapshot:" in out
    assert answered and answered[0]["steps"] == LONG + 2

    c = ServerThread(served, snapshots, free_port())
    try:
        t = c.call("GET", "/v1/streams/t/state")
        assert t["steps"] == LONG + 2
        m = t["steps"]
        reply = c.step("t", x[1, m:m + 3])
        want, = offline_many(served.model, [(None, x[1, :m + 3])])
        np.testing.assert_allclose(reply["outputs"], want[m:], atol=1e-5)
        reply = c.step("k", x[0, 8:10])
        want, = offline_many(served.model, [(None, x[0, :10])])
        np.testing.assert_allclose(reply["outputs"], want[8:], atol=1e-5)
    finally:
        c.close()
