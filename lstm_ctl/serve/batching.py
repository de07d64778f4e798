"""Batching for the server: requests of different streams gathered into
one model step, a stream's own requests kept in arrival order (Scheduler);
the Prometheus metrics; request errors. Every pool call runs on the
scheduler's one worker thread, so the pool needs no lock."""

import asyncio
import collections
import concurrent.futures
import dataclasses
import time

import numpy as np
import prometheus_client as prom
from aiohttp import web

from lstm_ctl.data.units import UnitsError
from lstm_ctl.serve.levels import level_json
from lstm_ctl.serve.pool import PoolFullError, UnknownStreamError

RETRY_AFTER_SECONDS = 1


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
    value: object      # step: [k, D] inputs (a changes run: data units);
    #                    reset: (state or None, steps, level or None)
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
                state, steps, level = op.value
                pool.reset(op.stream, state, steps, level)
                return True, {"stream": op.stream, "steps": steps}
            if op.kind == "state":
                out = {"stream": op.stream,
                       "state": state_json(pool.state(op.stream)),
                       "steps": pool.steps(op.stream)}
                if pool.level_dim:  # a changes run: the level too
                    out["level"] = level_json(pool.level(op.stream))
                return True, out
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
        inputs, levels = [op.value for op in admitted], None
        if pool.level_dim:
            admitted, inputs, levels = self._changes(admitted, results)
        if not admitted:
            return results
        start = time.perf_counter()
        try:
            outputs = pool.step([op.stream for op in admitted], inputs,
                                None if levels is None else
                                [v[-1] for v in levels])
        except Exception as e:  # a bug, not a bad request: validated above
            return results + [(op, (False, e)) for op in admitted]
        seconds = time.perf_counter() - start
        m = self.metrics
        m.step_seconds.observe(seconds)
        m.batch_size.observe(len(admitted))
        m.steps.inc(sum(len(op.value) for op in admitted))
        # Decoded for the whole batch at once, then split per stream.
        rows = self.units.decode(np.concatenate(outputs), None if levels
                                 is None else np.concatenate(levels))
        start = 0
        for op, y in zip(admitted, outputs):
            results.append((op, (True, {
                "stream": op.stream, "outputs": rows[start:start + len(y)],
                "steps": pool.steps(op.stream)})))
            start += len(y)
        return results

    def _changes(self, ops, results):
        """A changes run: each op's data-unit rows -> model inputs against
        its stream's level (a row that cannot be read: 400, that op only),
        with the levels of its rows (`[k, O]`: what its outputs are summed
        onto, the last one the level it leaves)."""
        pool, units = self.pool, self.units
        kept, inputs, levels = [], [], []
        for op in ops:
            try:
                x = units.encode(op.value, pool.level(op.stream)
                                 if op.stream in pool else None)
            except UnitsError as e:  # counted where it is answered
                results.append((op, (False, RequestError(400, str(e)))))
                continue
            kept.append(op)
            inputs.append(x)
            levels.append(units.levels_of(op.value))
        return kept, inputs, levels


def state_json(state):
    return [{"h": np.asarray(s.h, np.float64).tolist(),
             "c": np.asarray(s.c, np.float64).tolist()} for s in state]
