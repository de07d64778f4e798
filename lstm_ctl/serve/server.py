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
                                   "steps": n, "level": [...]}
  GET    /v1/streams/{id}/state   (its answer is a reset body that sets the
                                   stream back as it was)
  DELETE /v1/streams/{id}
  GET    /v1/streams              the ids held (for moving streams)
  GET    /v1/model   GET /healthz   GET /metrics
"""

import asyncio
import gc
import hmac
import json
import os
import sys
import time
import uuid

import prometheus_client as prom
from aiohttp import web

from lstm_ctl.config import validate_serve as validate
from lstm_ctl.data.units import UnitsError
from lstm_ctl.serve.batching import (
    Metrics, RequestError, Scheduler, _error_response)
from lstm_ctl.serve.pool import StatePool

SNAPSHOT_FILE = "streams.npz"
SERVER_HEADER = "X-Lstm-Ctl-Server"  # which server answered (moving streams)
MAX_ID_LENGTH = 128


def read_token(path):
    with open(path) as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"--auth_token_file {path} is empty.")
    return token


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
            on_evict=self._evicted, clock=clock,
            level_dim=self.units.level_dim)
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

    def _evicted(self, stream_id, state, steps, *level):
        self.metrics.evictions.inc()
        if self.app_on_evict is not None:  # a changes run: and the level
            self.app_on_evict(stream_id, state, steps, *level)

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
            # A changes run: read here, converted to the model's changes on
            # the pool's thread, against the stream's level at its turn.
            x = (self.units.read(body["inputs"]) if self.units.level_dim
                 else self.units.encode(body["inputs"]))
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
        try:  # absent or null: unknown, the next row is a first row
            level = self.pool.check_level(body.get("level"))
        except ValueError as e:
            raise RequestError(400, f"\"level\": {e}")
        if isinstance(steps, bool) or not isinstance(steps, int) or \
                steps < 0:
            raise RequestError(400, "\"steps\" must be an integer >= 0 "
                                    f"(the count to continue from); got "
                                    f"{steps!r}.")
        return web.json_response(
            await self.scheduler.submit("reset", sid, (state, steps, level)))

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
