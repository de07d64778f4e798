"""Two servers behind a real nginx with deploy/nginx.conf on loopback:
streams spread over both servers, each stream stays on one, every stream's
outputs equal the offline reference; a third server added (nginx reloaded,
deploy/move_streams.py run) takes over its share of the streams, which
continue exactly. The servers are the Server that serve.py runs (app, pool,
snapshots) on ports of 127.0.0.1, each with its own model, on threads of
this process: what this test checks is nginx's routing by stream id and
the move, and a serve.py process per server would only add ~6 s of
TensorFlow's import each. (serve.py as a process, and a server restarted
from its snapshot: test_serve_signals.py.)"""

import asyncio
import io
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import numpy as np
import pytest

from lstm_ctl.serve import loading
from helpers import offline_many
from serve_process import ROOT, ServerThread

sys.path.insert(0, str(ROOT / "deploy"))
import move_streams  # noqa: E402

NGINX = shutil.which("nginx") or shutil.which(
    "nginx", path="/usr/sbin:/usr/local/sbin")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NGINX is None, reason=(
        "nginx is not installed (apt-get install nginx; .ci/run installs "
        "it)")),
]
STREAMS = 40


def nginx_conf(listen, backends, prefix):
    """deploy/nginx.conf with the test's ports."""
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    conf = conf.replace("listen 127.0.0.1:8500;", f"listen 127.0.0.1:{listen};")
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in backends)
    conf, n = re.subn(r"(        server 127\.0\.0\.1:850[12];\n)+", servers,
                      conf)
    assert n == 1, "deploy/nginx.conf no longer lists 8501 and 8502"
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return path


def wait_for_port(port, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {seconds} s")


async def step_all(url, x, lo, hi):
    """Every stream's rows [lo, hi) through `url`, all streams at once, in
    requests of two rows; returns the outputs `[STREAMS, hi - lo, 1]` and
    the last `steps` of each stream."""
    async with aiohttp.ClientSession() as session:
        async def stream(i):
            outputs, steps = [], None
            for t in range(lo, hi, 2):
                async with session.post(
                        f"{url}/v1/streams/sensor-{i}/step",
                        json={"inputs": x[i, t:t + 2].tolist()}) as r:
                    reply = await r.json()
                    assert r.status == 200, reply
                outputs += reply["outputs"]
                steps = reply["steps"]
            return outputs, steps
        results = await asyncio.gather(*(stream(i) for i in range(STREAMS)))
    return np.array([r[0] for r in results]), [r[1] for r in results]


def test_two_servers_behind_nginx(tmp_path, free_port, serve_run_dir):
    run_dir = serve_run_dir   # read only: the snapshots go to tmp_path
    model = loading.load(run_dir).model
    x = np.random.default_rng(0).uniform(-1, 1, (STREAMS, 18, 1))
    want = offline_many(model, [(None, x[i]) for i in range(STREAMS)])

    ports = [free_port() for _ in range(4)]
    backends = [ServerThread(loading.load(run_dir), tmp_path / f"snap{k}",
                             ports[k + 1]) for k in range(2)]
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    nginx = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c",
         str(nginx_conf(ports[0], ports[1:3], prefix)), "-g", "daemon off;"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{ports[0]}"
    try:
        wait_for_port(ports[0], nginx)
        got, steps = asyncio.run(step_all(url, x, 0, 6))
        for i in range(STREAMS):
            np.testing.assert_allclose(got[i], want[i][:6], atol=1e-5)
        assert steps == [6] * STREAMS

        # Spread over both servers, each stream on exactly one.
        held = [b.call("GET", "/healthz")["streams"] for b in backends]
        assert sum(held) == STREAMS and min(held) >= STREAMS // 5, held
        home = {}
        for i in range(STREAMS):
            found = []
            for k, b in enumerate(backends):
                try:
                    b.call("GET", f"/v1/streams/sensor-{i}/state")
                    found.append(k)
                except Exception:  # urllib's HTTPError 404
                    pass
            assert len(found) == 1, (i, found)
            home[i] = found[0]
        assert [list(home.values()).count(k) for k in (0, 1)] == held

        got, steps = asyncio.run(step_all(url, x, 6, 12))
        for i in range(STREAMS):
            np.testing.assert_allclose(got[i], want[i][6:12], atol=1e-5)
        assert steps == [12] * STREAMS
        assert [b.call("GET", "/healthz")["streams"]
                for b in backends] == held

        # A third server joins: nginx reloads with it, the streams that now
        # hash to it move there, and every stream continues exactly.
        backends.append(ServerThread(loading.load(run_dir),
                                     tmp_path / "snap2", ports[3]))
        nginx_conf(ports[0], ports[1:], prefix)
        nginx.send_signal(signal.SIGHUP)
        time.sleep(2)  # the new workers take over
        moved, kept = move_streams.move(url, [b.url for b in backends[:2]],
                                        out=io.StringIO())
        now = [b.call("GET", "/healthz")["streams"] for b in backends]
        assert moved == now[2] and moved + kept == STREAMS, (moved, now)
        assert sum(now) == STREAMS and min(now) >= STREAMS // 8, now
        got, steps = asyncio.run(step_all(url, x, 12, 18))
        for i in range(STREAMS):
            np.testing.assert_allclose(got[i], want[i][12:], atol=1e-5)
        assert steps == [18] * STREAMS
        assert [b.call("GET", "/healthz")["streams"]
                for b in backends] == now
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.communicate(timeout=30)
        for b in backends:
            b.close()
