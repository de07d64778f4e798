"""serve.py in a process of its own, and the same server on a thread of
this process, for the end-to-end serving tests."""

import asyncio
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from lstm_ctl.core.state import LSTMState

ROOT = pathlib.Path(__file__).resolve().parents[2]


def metric_samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples}


def as_state(state_json):
    return tuple(LSTMState(np.array(s["h"], np.float32),
                           np.array(s["c"], np.float32))
                 for s in state_json)


class _Client:
    """Requests to a server at `self.url`."""

    def call(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         method=method)
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.loads(r.read())

    def step(self, sid, rows, timeout=30):
        return self.call("POST", f"/v1/streams/{sid}/step",
                         {"inputs": np.asarray(rows).tolist()}, timeout)

    def metric(self, name):
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as r:
            return metric_samples(r.read().decode())[(name, ())]

    def snapshots(self):
        return self.metric("lstm_ctl_snapshots_total")


class ServeProcess(_Client):
    """serve.py in a process of its own, on a free port."""

    def __init__(self, run_dir, snapshot_dir, port, *flags):
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "serve.py"), f"--model_dir={run_dir}",
             f"--port={port}", f"--snapshot_dir={snapshot_dir}",
             "--max_wait_ms=1", *flags],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                     PYTHONPATH=str(ROOT)), text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                self.call("GET", "/healthz")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.proc.kill()
        raise AssertionError("serve.py did not start within 90 s")

    def stop(self, sig):
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, out


class ServerThread(_Client):
    """The server that serve.py runs (lstm_ctl.serve.server.Server: the same
    app, pool, snapshot restore on start and snapshot on stop) on a port of
    127.0.0.1, its event loop on a thread of this process: a backend that
    pays no new process (TensorFlow's import alone is ~6 s of CPU).
    `served` is a loading.load() of the run."""

    def __init__(self, served, snapshot_dir, port, **options):
        from aiohttp import web
        from lstm_ctl.config import ServeConfig
        from lstm_ctl.serve.server import Server
        self.url = f"http://127.0.0.1:{port}"
        options.setdefault("max_wait_ms", 1.0)
        self.server = Server(served, ServeConfig(
            model_dir="unused", port=port, snapshot_dir=str(snapshot_dir),
            **options))
        self.server.pool.warmup()
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(self.server.app, handle_signals=False)
        started = concurrent.futures.Future()

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.runner.setup())
                self.loop.run_until_complete(
                    web.TCPSite(self.runner, "127.0.0.1", port).start())
            except BaseException as e:  # noqa: BLE001 (to the caller)
                started.set_exception(e)
                return
            started.set_result(None)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.result(timeout=60)

    def close(self):
        """Stops as serve.py does on SIGTERM: drains, snapshots, stops."""
        if not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(
            self.runner.cleanup(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=60)
        self.loop.close()
