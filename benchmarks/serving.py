"""Load test of serve.py on loopback: N concurrent streams, each sending
one-row step requests back to back (closed loop), against the same streams
served one `model.step` call per request without batching (a hand-written
dict of states around a compiled `step`, in the same aiohttp framework).

Per mode, two runs: closed loop (each stream sends its next step as soon as
the last is answered: the most stream-steps per second, and the latency
that queueing 1,000 streams gives at that rate) and open loop at
`--rate` steps per second per stream (p50/p99 latency at a load both modes
can be offered). Mean streams per model step from the server's
`lstm_ctl_batch_size` histogram. Bounded: each run lasts `--warmup` +
`--seconds` seconds.

    python benchmarks/serving.py --streams=1000 --seconds=15

The server and the load generator are separate processes on the same
machine (the client's CPU use is part of the picture on a small machine).
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _raise_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------ the run dir
def make_run_dir(path, units, layers):
    """A sine run dir with random weights (serving speed does not depend
    on training)."""
    import numpy as np
    import tensorflow as tf
    from lstm_ctl import config as config_lib
    from lstm_ctl.data.task_classes import from_run
    from lstm_ctl.run import builders, checkpoints
    config = config_lib.TrainConfig(
        model_dir=path, model=config_lib.ModelConfig(units=units,
                                                     num_layers=layers))
    model = builders.build_model(config, from_run(config, path))
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(0.1 * rng.standard_normal(v.shape).astype(np.float32))
    config_lib.save(config, path)
    checkpoints.Checkpoints(path, 1, model=model).save(1)
    del tf


# ------------------------------------------------------ unbatched server
def unbatched_server(model_dir, port):
    """One compiled `model.step` call per request (batch of 1), the state of
    each stream in a dict: what a user writes by hand without the pool."""
    import numpy as np
    import tensorflow as tf
    from aiohttp import web
    from lstm_ctl.core.state import LSTMState
    from lstm_ctl.serve import loading
    served = loading.load(model_dir)
    model, units = served.model, served.units
    spec = tf.TensorSpec([1, model.units], tf.float32)
    step = tf.function(model.step, autograph=False, input_signature=[
        tf.TensorSpec([1, model.input_dim], tf.float32),
        tuple(LSTMState(spec, spec) for _ in range(model.num_layers))])
    states, counts = {}, {}

    async def handle(request):
        sid = request.match_info["id"]
        body = await request.json()
        x = units.encode(body["inputs"])
        state = states.get(sid)
        if state is None:
            state = model.initial_state(1)
        outputs = []
        for row in x:
            y, state = step(row[None], state)
            outputs.append(np.asarray(y)[0])
        states[sid] = state
        counts[sid] = counts.get(sid, 0) + len(x)
        return web.json_response({"stream": sid,
                                  "outputs": units.decode(outputs),
                                  "steps": counts[sid]})

    async def healthz(request):
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/streams/{id}/step", handle)
    app.router.add_get("/healthz", healthz)
    print(f"unbatched server on {port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# ----------------------------------------------------------------- client
async def load(url, streams, warmup, seconds, rate=0.0):
    """Closed loop (`rate` 0: each stream sends its next step as soon as the
    last is answered) or open loop (each stream sends one step every
    1/`rate` seconds, or as soon as its last is answered when late;
    latency counts from the scheduled time, so queueing is not hidden)."""
    import random
    import aiohttp
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    latencies, counted, total = [], [0], [0]

    async def metrics(session):
        try:
            async with session.get(f"{url}/metrics") as r:
                text = await r.text()
        except aiohttp.ClientError:
            return None
        values = {}
        for line in text.splitlines():
            for name in ("lstm_ctl_batch_size_sum",
                         "lstm_ctl_batch_size_count"):
                if line.startswith(name + " "):
                    values[name] = float(line.split()[1])
            if line.startswith("lstm_ctl_request_seconds_bucket{"):
                le = line.split('le="')[1].split('"')[0]
                values[("le", float(le))] = float(line.split()[-1])
        return values or None

    def server_p99(first, last):
        """p99 of the server's own request time in the window, as the
        upper bound of its histogram bucket (None: no histogram)."""
        edges = sorted(k[1] for k in last if isinstance(k, tuple))
        if not edges:
            return None
        counts = [last[("le", e)] - first.get(("le", e), 0) for e in edges]
        for edge, count in zip(edges, counts):
            if count >= 0.99 * counts[-1]:
                return 1000 * edge
        return None

    connector = aiohttp.TCPConnector(limit=streams + 8)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=timeout) as session:
        async def stream(i):
            value = 0.0
            due = start + (random.Random(i).random() / rate if rate else 0)
            while time.monotonic() < stop_at:
                value = (value + 0.37) % 2.0 - 1.0
                if rate:
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    t0, due = due, due + 1.0 / rate
                else:
                    t0 = time.monotonic()
                async with session.post(f"{url}/v1/streams/s{i}/step",
                                        json={"inputs": [[value]]}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                t1 = time.monotonic()
                total[0] += 1
                if measure_from <= t0 and t1 <= stop_at:
                    latencies.append(t1 - t0)
                    counted[0] += 1

        async def window():
            await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
            first = await metrics(session)
            await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
            last = await metrics(session)
            return first, last

        tasks = [asyncio.ensure_future(stream(i)) for i in range(streams)]
        first, last = await window()
        await asyncio.gather(*tasks)
    latencies.sort()
    n = len(latencies)
    per_step = 1.0
    if first and last:
        per_step = ((last["lstm_ctl_batch_size_sum"]
                     - first["lstm_ctl_batch_size_sum"])
                    / max(1.0, last["lstm_ctl_batch_size_count"]
                          - first["lstm_ctl_batch_size_count"]))
    return {"streams": streams, "steps_per_s": counted[0] / seconds,
            "p50_ms": 1000 * latencies[n // 2] if n else None,
            "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))]
            if n else None,
            "streams_per_step": per_step, "requests": n,
            "server_p99_ms_at_most": server_p99(first, last)
            if first and last else None,
            "all_requests": total[0]}


def run_client(url, streams, warmup, seconds, rate=0.0):
    """The load generator in a process of its own; returns its numbers."""
    out = subprocess.run(
        [sys.executable, __file__, "--client", url, f"--streams={streams}",
         f"--warmup={warmup}", f"--seconds={seconds}", f"--rate={rate}"],
        capture_output=True, text=True, timeout=warmup + seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    return proc


def wait_ready(proc, url, seconds=120):
    import urllib.request
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read())
        try:
            urllib.request.urlopen(url + "/healthz", timeout=5).read()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("server did not start")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--max_wait_ms", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=0.5,
                   help="steps per second per stream in the latency run "
                   "(open loop)")
    p.add_argument("--modes", default="batched,unbatched")
    p.add_argument("--client", default=None, help=argparse.SUPPRESS)
    p.add_argument("--unbatched_server", nargs=2, default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    _raise_file_limit()
    if args.client:
        result = asyncio.run(load(args.client, args.streams, args.warmup,
                                  args.seconds, args.rate))
        print(json.dumps(result))
        return
    if args.unbatched_server:
        unbatched_server(args.unbatched_server[0],
                         int(args.unbatched_server[1]))
        return

    run_dir = os.path.join(tempfile.mkdtemp(prefix="lstm_ctl_serving_"),
                           "run")
    make_run_dir(run_dir, args.units, args.layers)
    rows = []
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    for mode in args.modes.split(","):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        if mode == "batched":
            proc = start([sys.executable, os.path.join(ROOT, "serve.py"),
                          f"--model_dir={run_dir}", f"--port={port}",
                          f"--capacity={args.streams}",
                          f"--max_wait_ms={args.max_wait_ms}"])
        else:
            proc = start([sys.executable, __file__, "--unbatched_server",
                          run_dir, str(port)])
        try:
            wait_ready(proc, url)
            cpu = cpu_seconds(proc.pid)
            full = run_client(url, args.streams, args.warmup, args.seconds)
            cpu = (cpu_seconds(proc.pid) - cpu) / full["all_requests"]
            paced = run_client(url, args.streams, args.warmup, args.seconds,
                               args.rate)
        finally:
            stop(proc)
        row = dict(mode=mode, streams=args.streams,
                   max_steps_per_s=full["steps_per_s"],
                   closed_p50_ms=full["p50_ms"], closed_p99_ms=full["p99_ms"],
                   streams_per_step=full["streams_per_step"],
                   server_cpu_ms_per_step=1000 * cpu,
                   offered_per_s=args.rate * args.streams,
                   paced_steps_per_s=paced["steps_per_s"],
                   p50_ms=paced["p50_ms"], p99_ms=paced["p99_ms"],
                   server_p99_ms_at_most=paced["server_p99_ms_at_most"],
                   paced_streams_per_step=paced["streams_per_step"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nH={args.units}, {args.layers} layer(s), {args.streams} "
          f"concurrent streams, one row per request, {args.seconds:.0f} s "
          f"per run, {os.cpu_count()} CPU cores, load average before: "
          f"{load_before}")
    print("| mode | max stream-steps/s (closed loop) | streams per model "
          "step | server CPU ms per stream-step | p50 / p99 ms (closed "
          f"loop) | p50 / p99 ms at {args.rate * args.streams:.0f} "
          "steps/s offered |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        inside = r["server_p99_ms_at_most"]
        inside = f", in the server <= {inside:g}" if inside else ""
        print(f"| {r['mode']} | {r['max_steps_per_s']:.0f} | "
              f"{r['streams_per_step']:.1f} | "
              f"{r['server_cpu_ms_per_step']:.2f} | "
              f"{r['closed_p50_ms']:.0f} / "
              f"{r['closed_p99_ms']:.0f} | {r['p50_ms']:.1f} / "
              f"{r['p99_ms']:.1f} (served {r['paced_steps_per_s']:.0f}/s"
              f"{inside}) |")
    base = {r["mode"]: r for r in rows}
    if "batched" in base and "unbatched" in base:
        print(f"\nbatched / unbatched throughput: "
              f"{base['batched']['max_steps_per_s'] / base['unbatched']['max_steps_per_s']:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
