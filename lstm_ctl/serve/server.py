"""The HTTP server behind serve.py: many live streams, one state each.

aiohttp serves JSON over HTTP; every pool call runs on one worker thread,
so the event loop keeps accepting while the model steps, and the pool needs
no lock. Requests go into one queue in arrival order; the scheduler takes
them in batches: at most one step per stream per batch (so a stream's
requests apply one at a time, in order), every different stream that is
waiting (after up to `max_wait_ms` for more to arrive) in one model step.
A reset, state read or delete of a stream runs before the batch unless an
earlier step of the same stream is still waiting, in which case it waits
its turn too.

Endpoints (see docs/serving.md):
  POST   /v1/streams/{id}/step    {"inputs": [[...], ...]}
  POST   /v1/streams/{id}/reset   {} or {"state": [{"h": [...], "c": [...]}],
                                   "steps": n}
  GET    /v1/streams/{id}/state
  DELETE /v1/streams/{id}
  GET    /v1/streams              the ids held (for moving streams)
  GET    /v1/model   GET /healthz   GET /metrics
"""

import asyncio
import collections
import concurrent.futures
import dataclasses
import gc
import hmac
import json
import os
import sys
import time
import uuid

import numpy as np
import prometheus_client as prom
from aiohttp import web

from lstm_ctl.config import validate_serve as validate
from lstm_ctl.data.units import UnitsError
from lstm_ctl.serve.pool import (PoolFullError, StatePool,
                                 UnknownStreamError)

SNAPSHOT_FILE = "streams.npz"
SERVER_HEADER = "X-Lstm-Ctl-Server"  # which server answered (moving streams)
MAX_ID_LENGTH = 128
RETRY_AFTER_SECONDS = 1


def read_token(path):
    with open(path) as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"--auth_token_file {path} is empty.")
    return token


# ----------------------------------------------------------------- errors
class RequestError(Exception):
    """A request that is answered with `status` and `{"error": message}`."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _error_response(status, message, headers=None):
    return web.json_response({"error": message}, status=status,
                             headers=headers)


def _full(e):
    return RequestError(503, str(e),
                        {"Retry-After": str(RETRY_AFTER_SECONDS)})


# ---------------------------------------------------------------- metrics
class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self):
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.streams_active = prom.Gauge(
            "lstm_ctl_streams_active", "Streams holding a state in the pool.",
            registry=r)
        self.steps = prom.Counter(
            "lstm_ctl_steps", "Stream-steps run (one per input row).",
            registry=r)
        self.batch_size = prom.Histogram(
            "lstm_ctl_batch_size", "Streams per model step.", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                     4096))
        self.step_seconds = prom.Histogram(
            "lstm_ctl_step_seconds", "Seconds per batched model step.",
            registry=r, buckets=(.0005, .001, .0025, .005, .01, .025, .05,
                                 .1, .25, .5, 1, 2.5))
        self.evictions = prom.Counter(
            "lstm_ctl_evictions", "Idle streams evicted.", registry=r)
        self.rejected = prom.Counter(
            "lstm_ctl_rejected", "Requests refused (reason: full, "
            "bad_request, unauthorized).", ["reason"], registry=r)
        self.in_flight = prom.Gauge(
            "lstm_ctl_requests_in_flight", "Stream requests received and "
            "not yet answered.", registry=r)
        self.request_seconds = prom.Histogram(
            "lstm_ctl_request_seconds", "Seconds from a stream request's "
            "arrival to its answer.", registry=r,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                     2.5, 5, 10))
        self.snapshots = prom.Counter(
            "lstm_ctl_snapshots", "Snapshots of the pool written.",
            registry=r)

    def text(self):
        return prom.generate_latest(self.registry)


# -------------------------------------------------------------- scheduler
@dataclasses.dataclass
class _Op:
    kind: str          # "step", "reset", "state", "end"
    stream: str
    value: object      # step: [k, D] inputs; reset: (state or None, steps)
    future: asyncio.Future


class Scheduler:
    """Runs the queued operations on the pool, batching steps of different
    streams, on one worker thread."""

    def __init__(self, pool, units, metrics, max_wait_ms):
        self.pool, self.units, self.metrics = pool, units, metrics
        self.max_wait = max_wait_ms / 1000.0
        self.pending = collections.deque()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="lstm_ctl_pool")
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task = None

    def start(self):
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, kind, stream, value=None):
        if self._closing:
            raise RequestError(503, "the server is shutting down.",
                               {"Retry-After": str(RETRY_AFTER_SECONDS)})
        future = asyncio.get_running_loop().create_future()
        self.pending.append(_Op(kind, stream, value, future))
        self._wakeup.set()
        return await future

    async def call(self, fn, *args):
        """Runs `fn(*args)` on the pool's thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, fn, *args)

    async def close(self):
        """Finishes every queued operation, then stops."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _loop(self):
        while True:
            if not self.pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                if self.max_wait and not self._closing:
                    # Let concurrent requests of other streams join.
                    await self._gather_more()
                continue
            controls, steps = self._take()
            try:
                results = await self.call(self._execute, controls, steps)
            except Exception as e:  # a bug: fail these requests, go on
                results = [(op, (False, e)) for op in controls + steps]
            for op, (ok, value) in results:
                if op.future.done():  # the client went away
                    continue
                if ok:
                    op.future.set_result(value)
                else:
                    op.future.set_exception(value)

    async def _gather_more(self):
        deadline = time.monotonic() + self.max_wait
        limit = self.pool.buckets[-1]
        while len(self.pending) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self):
        """The operations to run now: controls (in order) before one step
        per stream; a stream with an operation left waiting is blocked for
        the rest of the queue, which keeps each stream's order."""
        blocked, controls, steps, rest = set(), [], [], collections.deque()
        limit = self.pool.capacity
        for op in self.pending:
            if op.stream in blocked or (op.kind == "step"
                                        and len(steps) >= limit):
                rest.append(op)
                blocked.add(op.stream)
            elif op.kind == "step":
                steps.append(op)
                blocked.add(op.stream)
            else:
                controls.append(op)
        self.pending = rest
        return controls, steps

    # ---------------------------------------------- on the worker thread
    def _execute(self, controls, steps):
        results = [(op, self._control(op)) for op in controls]
        if steps:
            results += self._step(steps)
        self.metrics.streams_active.set(len(self.pool))
        return results

    def _control(self, op):
        pool = self.pool
        try:
            if op.kind == "reset":
                state, steps = op.value
                pool.reset(op.stream, state, steps)
                return True, {"stream": op.stream, "steps": steps}
            if op.kind == "state":
                return True, {"stream": op.stream,
                              "state": state_json(pool.state(op.stream)),
                              "steps": pool.steps(op.stream)}
            if op.kind == "end":
                steps = pool.steps(op.stream)
                pool.end(op.stream)
                return True, {"stream": op.stream, "deleted": True,
                              "steps": steps}
            raise ValueError(f"unknown operation {op.kind!r}")
        except UnknownStreamError as e:
            return False, RequestError(404, str(e))
        except PoolFullError as e:
            self.metrics.rejected.labels("full").inc()
            return False, _full(e)
        except ValueError as e:
            return False, RequestError(400, str(e))

    def _step(self, ops):
        pool = self.pool
        new = sum(op.stream not in pool for op in ops)
        if new > pool.free_slots:
            pool.evict_idle()
        free = pool.free_slots
        results, admitted = [], []
        for op in ops:
            if op.stream not in pool:
                if free == 0:
                    self.metrics.rejected.labels("full").inc()
                    results.append((op, (False, _full(PoolFullError(
                        f"the pool is full: all {pool.capacity} streams "
                        "are live; retry later, or end a stream (DELETE "
                        "/v1/streams/{id}).")))))
                    continue
                free -= 1
            admitted.append(op)
        if not admitted:
            return results
        start = time.perf_counter()
        try:
            outputs = pool.step([op.stream for op in admitted],
                                [op.value for op in admitted])
        except Exception as e:  # a bug, not a bad request: validated above
            return results + [(op, (False, e)) for op in admitted]
        seconds = time.perf_counter() - start
        m = self.metrics
        m.step_seconds.observe(seconds)
        m.batch_size.observe(len(admitted))
        m.steps.inc(sum(len(op.value) for op in admitted))
        # Decoded for the whole batch at once, then split per stream.
        rows = self.units.decode(np.concatenate(outputs))
        start = 0
        for op, y in zip(admitted, outputs):
            results.append((op, (True, {
                "stream": op.stream, "outputs": rows[start:start + len(y)],
                "steps": pool.steps(op.stream)})))
            start += len(y)
        return results


def state_json(state):
    return [{"h": np.asarray(s.h, np.float64).tolist(),
             "c": np.asarray(s.c, np.float64).tolist()} for s in state]


# ---------------------------------------------------------------- the app
def _stream_id(request):
    sid = request.match_info["id"]
    if not sid or len(sid) > MAX_ID_LENGTH or not sid.isprintable() or \
            "/" in sid or any(ch.isspace() for ch in sid):
        raise RequestError(
            400, f"a stream id must be 1 to {MAX_ID_LENGTH} printable "
                 f"characters without spaces or '/'; got {sid[:40]!r}"
                 f"{'...' if len(sid) > 40 else ''}.")
    return sid


def _reject_constant(name):
    return float("nan") if name == "NaN" else float(
        "inf" if name == "Infinity" else "-inf")


async def _json_body(request, empty_ok=False):
    body = await request.read()  # over client_max_size: 413
    if not body.strip():
        if empty_ok:
            return {}
        raise RequestError(400, "the request body is empty; send a JSON "
                                "object.")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the request body is not JSON: {e}.")
    except RecursionError:
        raise RequestError(400, "the request body nests too deeply.")
    if not isinstance(value, dict):
        raise RequestError(400, "the request body must be a JSON object; "
                                f"got a {type(value).__name__}.")
    return value


class Server:
    """The aiohttp application around one StatePool."""

    def __init__(self, served, config, on_evict=None, clock=time.monotonic):
        self.config = validate(config)
        self.served = served
        self.units = served.units
        self.metrics = Metrics()
        self.app_on_evict = on_evict
        self.pool = StatePool(
            served.model, config.capacity,
            idle_timeout=config.idle_timeout or None,
            on_evict=self._evicted, clock=clock)
        self.token = (read_token(config.auth_token_file)
                      if config.auth_token_file else None)
        self.snapshot_path = (os.path.join(config.snapshot_dir, SNAPSHOT_FILE)
                              if config.snapshot_dir else None)
        self.restored = []
        if self.snapshot_path and os.path.exists(self.snapshot_path):
            self.restored = self.pool.restore(self.snapshot_path)
        self.metrics.streams_active.set(len(self.pool))
        self.server_id = uuid.uuid4().hex[:12]
        self.scheduler = None
        self._tasks = []
        self.app = self._make_app()

    def _evicted(self, stream_id, state, steps):
        self.metrics.evictions.inc()
        if self.app_on_evict is not None:
            self.app_on_evict(stream_id, state, steps)

    # --------------------------------------------------------- lifecycle
    def _make_app(self):
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              middlewares=[self._errors, self._auth])
        r = app.router
        r.add_post("/v1/streams/{id}/step", self.step)
        r.add_post("/v1/streams/{id}/reset", self.reset)
        r.add_get("/v1/streams/{id}/state", self.state)
        r.add_delete("/v1/streams/{id}", self.delete)
        r.add_get("/v1/streams", self.list_streams)
        r.add_get("/v1/model", self.model_info)
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics_text)
        app.on_response_prepare.append(self._stamp)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _stamp(self, request, response):
        response.headers[SERVER_HEADER] = self.server_id

    async def _startup(self, app):
        self.scheduler = Scheduler(self.pool, self.units, self.metrics,
                                   self.config.max_wait_ms)
        self.scheduler.start()
        loop = asyncio.get_running_loop()
        if self.config.idle_timeout:
            every = min(1.0, self.config.idle_timeout / 4)
            self._tasks.append(loop.create_task(self._every(
                every, self.pool.evict_idle, self._update_gauge)))
        if self.snapshot_path and self.config.snapshot_every:
            self._tasks.append(loop.create_task(self._every(
                self.config.snapshot_every, self.snapshot)))

    async def _every(self, seconds, fn, *after):
        while True:
            await asyncio.sleep(seconds)
            await self.scheduler.call(fn)
            for f in after:
                f()

    def _update_gauge(self):
        self.metrics.streams_active.set(len(self.pool))

    def snapshot(self):
        """Writes the pool's snapshot (on the pool's thread)."""
        if not self.snapshot_path:
            return None
        self.pool.snapshot(self.snapshot_path)
        self.metrics.snapshots.inc()
        return self.snapshot_path

    async def _cleanup(self, app):
        """After the last request: finish the queue, snapshot, stop."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.scheduler.close()
        await self.scheduler.call(self.snapshot)
        self.scheduler.executor.shutdown(wait=True)

    # -------------------------------------------------------- middleware
    @web.middleware
    async def _errors(self, request, handler):
        counted = request.path.startswith("/v1/streams/")
        if counted:
            self.metrics.in_flight.inc()
            start = time.perf_counter()
        try:
            return await handler(request)
        except RequestError as e:
            if e.status == 400 or e.status == 413:
                self.metrics.rejected.labels("bad_request").inc()
            return _error_response(e.status, e.message, e.headers)
        except web.HTTPException as e:  # unknown path, method, body size
            if e.status < 400:
                raise
            if e.status == 413:
                self.metrics.rejected.labels("bad_request").inc()
            message = {404: "no such endpoint", 405: "method not allowed "
                       "here", 413: "the request body is over the size "
                       f"limit of {self.config.max_body_bytes} bytes"}.get(
                           e.status, e.reason)
            return _error_response(e.status, f"{message}: {request.method} "
                                   f"{request.path}", {
                                       k: v for k, v in e.headers.items()
                                       if k in ("Allow", "Retry-After")})
        finally:
            if counted:
                self.metrics.in_flight.dec()
                self.metrics.request_seconds.observe(
                    time.perf_counter() - start)

    @web.middleware
    async def _auth(self, request, handler):
        if self.token is not None and request.path != "/healthz":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(),
                                       f"Bearer {self.token}".encode()):
                self.metrics.rejected.labels("unauthorized").inc()
                return _error_response(
                    401, "missing or wrong bearer token (send "
                    "'Authorization: Bearer <token>').",
                    {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    # ---------------------------------------------------------- handlers
    async def step(self, request):
        sid = _stream_id(request)
        body = await _json_body(request)
        if "inputs" not in body:
            raise RequestError(400, "the body must hold \"inputs\": one row "
                                    "per timestep.")
        try:
            x = self.units.encode(body["inputs"])
        except UnitsError as e:
            raise RequestError(400, str(e))
        if len(x) > self.config.max_rows:
            raise RequestError(400, f"\"inputs\" has {len(x)} rows; at most "
                               f"{self.config.max_rows} per request.")
        return web.json_response(await self.scheduler.submit("step", sid, x))

    async def reset(self, request):
        sid = _stream_id(request)
        body = await _json_body(request, empty_ok=True)
        state, steps = body.get("state"), body.get("steps", 0)
        if state is not None:
            try:
                state = self.pool.check_state(state)
            except ValueError as e:
                raise RequestError(400, f"\"state\": {e}")
        if isinstance(steps, bool) or not isinstance(steps, int) or \
                steps < 0:
            raise RequestError(400, "\"steps\" must be an integer >= 0 "
                                    f"(the count to continue from); got "
                                    f"{steps!r}.")
        return web.json_response(
            await self.scheduler.submit("reset", sid, (state, steps)))

    async def list_streams(self, request):
        ids = await self.scheduler.call(self.pool.ids)
        return web.json_response({"streams": ids, "count": len(ids)})

    async def state(self, request):
        sid = _stream_id(request)
        return web.json_response(await self.scheduler.submit("state", sid))

    async def delete(self, request):
        sid = _stream_id(request)
        return web.json_response(await self.scheduler.submit("end", sid))

    async def model_info(self, request):
        s, m = self.served, self.served.model
        return web.json_response(dict(
            self.units.describe(), units=m.units, num_layers=m.num_layers,
            checkpoint=s.checkpoint, capacity=self.pool.capacity))

    async def healthz(self, request):
        return web.json_response({"status": "ok", "server": self.server_id,
                                  "streams": len(self.pool),
                                  "capacity": self.pool.capacity})

    async def metrics_text(self, request):
        return web.Response(body=self.metrics.text(), headers={
            "Content-Type": prom.CONTENT_TYPE_LATEST})


# ------------------------------------------------------------------- main
async def _serve(server, config, out):
    import signal
    runner = web.AppRunner(server.app, handle_signals=False,
                           shutdown_timeout=30.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"Serving {config.model_dir} ({server.served.checkpoint}) on "
          f"http://{config.host}:{port} with {len(server.pool)} stream(s) "
          f"restored", file=out, flush=True)
    await stop.wait()
    print("Stopping: draining requests, then a snapshot.", file=out,
          flush=True)
    await runner.cleanup()  # stops listening, waits, then _cleanup
    print(f"Stopped; snapshot: {server.snapshot_path or 'none'}", file=out,
          flush=True)


def serve(config, out=sys.stdout):
    """Loads the model of `config.model_dir` and serves it until SIGTERM."""
    from lstm_ctl.serve import loading
    validate(config)
    served = loading.load(config.model_dir, config.checkpoint)
    server = Server(served, config)
    server.pool.warmup()
    # Everything loaded so far (TensorFlow's objects above all) stays out
    # of the garbage collector's full passes, which would otherwise stall
    # requests for tens of milliseconds now and then.
    gc.collect()
    gc.freeze()
    asyncio.run(_serve(server, config, out))
