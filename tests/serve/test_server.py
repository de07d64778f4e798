"""The HTTP server: served streams equal the model run offline (concurrent
streams, joins, leaves, resets to given states, multi-row requests), one
stream's requests apply in order, bad requests are 4xx and touch nothing,
capacity, idle eviction, auth, metrics; serve.py's errors in one line. In
process (aiohttp's test client); serve.py in processes, SIGTERM and
SIGKILL: tests/e2e."""

import asyncio
import contextlib
import json

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from lstm_ctl.config import ServeConfig
from lstm_ctl.core.state import LSTMState
from lstm_ctl.serve import loading
from lstm_ctl.serve.server import SERVER_HEADER, Server
from helpers import offline_many, run_main


@pytest.fixture(scope="module")
def served(serve_run_dir):
    return loading.load(serve_run_dir)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def serving(served, **options):
    options.setdefault("max_wait_ms", 5.0)
    on_evict = options.pop("on_evict", None)
    server = Server(served, ServeConfig(model_dir="unused", port=0,
                                        **options), on_evict=on_evict)
    async with TestClient(TestServer(server.app)) as client:
        yield server, client


async def post(client, path, body=None, **kw):
    data = body if isinstance(body, (str, bytes)) or body is None \
        else json.dumps(body)
    async with client.post(path, data=data, **kw) as r:
        return r.status, await r.json(), r.headers


async def get(client, path, **kw):
    async with client.get(path, **kw) as r:
        return r.status, (await r.json() if r.content_type ==
                          "application/json" else await r.text()), r.headers


def metric_samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples}


def as_state(state_json):
    return tuple(LSTMState(np.array(s["h"], np.float32),
                           np.array(s["c"], np.float32))
                 for s in state_json)


# ---------------------------------------------------------------- numbers
def test_served_streams_equal_the_model_run_offline(served):
    """10 streams at once, each a random mix of multi-row steps, resets to
    the initial state or given values, leaves and joins."""
    rng = np.random.default_rng(0)
    units = served.model.units
    segments = []
    plans = {f"pump-{i}": np.random.default_rng(i) for i in range(10)}

    async def stream(client, sid, r):
        seg = (None, [], [])
        for _ in range(8):
            action = r.random()
            if action < 0.15:
                given = tuple(LSTMState(r.standard_normal(units),
                                        r.standard_normal(units))
                              for _ in range(served.model.num_layers))
                body = {"state": [{"h": s.h.tolist(), "c": s.c.tolist()}
                                  for s in given]}
                status, reply, _ = await post(
                    client, f"/v1/streams/{sid}/reset", body)
                assert status == 200 and reply["steps"] == 0
                segments.append(seg)
                seg = (as_state(body["state"]), [], [])
            elif action < 0.25:
                status, _, _ = await post(client, f"/v1/streams/{sid}/reset")
                assert status == 200
                segments.append(seg)
                seg = (None, [], [])
            elif action < 0.35:
                async with client.delete(f"/v1/streams/{sid}") as resp:
                    assert resp.status == (200 if seg[1] else 404)
                segments.append(seg)
                seg = (None, [], [])
            else:
                rows = r.uniform(-1, 1, (int(r.integers(1, 4)), 1))
                status, reply, _ = await post(
                    client, f"/v1/streams/{sid}/step",
                    {"inputs": rows.tolist()})
                assert status == 200, reply
                seg[1].extend(rows)
                seg[2].extend(reply["outputs"])
                assert reply["stream"] == sid
                assert reply["steps"] == len(seg[1])
            await asyncio.sleep(float(r.uniform(0, 0.01)))
        segments.append(seg)

    async def main():
        async with serving(served, max_wait_ms=20.0) as (server, client):
            await asyncio.gather(*(stream(client, sid, r)
                                   for sid, r in plans.items()))
            _, text, _ = await get(client, "/metrics")
            return metric_samples(text)

    samples = run(main())
    segments = [s for s in segments if s[1]]
    assert sum(len(s[1]) for s in segments) > 60
    for (_, _, got), want in zip(segments, offline_many(
            served.model, [(g, rows) for g, rows, _ in segments])):
        np.testing.assert_allclose(np.array(got), want, atol=1e-5)
    # Concurrent streams shared model steps.
    batches = samples[("lstm_ctl_batch_size_count", ())]
    streams = samples[("lstm_ctl_batch_size_sum", ())]
    assert streams / batches > 1.5, (streams, batches)
    assert samples[("lstm_ctl_steps_total", ())] == sum(
        len(s[1]) for s in segments)
    del rng


def test_one_streams_requests_apply_one_at_a_time_in_arrival_order(served):
    """20 requests of one stream at once: each applies after the one
    before it (the order in which they arrived), never two in one step."""
    x = np.random.default_rng(1).uniform(-1, 1, (20, 2, 1))

    async def main():
        async with serving(served, max_wait_ms=10.0) as (server, client):
            return await asyncio.gather(*(post(
                client, "/v1/streams/same/step", {"inputs": x[i].tolist()})
                for i in range(20)))

    replies = run(main())
    assert all(status == 200 for status, _, _ in replies)
    by_steps = sorted((reply["steps"], i, reply["outputs"])
                      for i, (_, reply, _) in enumerate(replies))
    assert [s for s, _, _ in by_steps] == list(range(2, 41, 2))
    rows = np.concatenate([x[i] for _, i, _ in by_steps])
    want, = offline_many(served.model, [(None, rows)])
    got = np.concatenate([out for _, _, out in by_steps])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_text_run_takes_characters_and_gives_probabilities(
        make_run_dir, tmp_path):
    text = loading.load(make_run_dir(tmp_path / "text", vocab="abc"))

    async def main():
        async with serving(text) as (server, client):
            status, reply, _ = await post(client, "/v1/streams/t/step",
                                          {"inputs": "cab"})
            bad = await post(client, "/v1/streams/t/step", {"inputs": "z"})
            _, info, _ = await get(client, "/v1/model")
            return reply, bad, info

    reply, bad, info = run(main())
    assert info["task"] == "text" and info["vocab"] == ["a", "b", "c"]
    probs = np.array(reply["outputs"])
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    logits, = offline_many(text.model, [(None, np.eye(3)[[2, 0, 1]])])
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(-1, keepdims=True),
                               atol=1e-5)
    assert bad[0] == 400 and "not in the model's vocabulary" in \
        bad[1]["error"]


# ------------------------------------------------------------ bad requests
BAD = [
    ("POST", "/v1/streams/target/step", "{not json", 400, "not JSON"),
    ("POST", "/v1/streams/target/step", "[1]", 400, "JSON object"),
    ("POST", "/v1/streams/target/step", "", 400, "body is empty"),
    ("POST", "/v1/streams/target/step", '{"x": 1}', 400, "\"inputs\""),
    ("POST", "/v1/streams/target/step", '{"inputs": []}', 400, "non-empty"),
    ("POST", "/v1/streams/target/step", '{"inputs": [[1, 2]]}', 400,
     "must be a list of 1 number(s) (features); got 2 values"),
    ("POST", "/v1/streams/target/step", '{"inputs": [0.5]}', 400,
     "row 0 of \"inputs\" must be a list"),
    ("POST", "/v1/streams/target/step", '{"inputs": [[0.1], [NaN]]}', 400,
     "row 1, feature 0 of \"inputs\" is NaN or infinity"),
    ("POST", "/v1/streams/target/step", '{"inputs": [[1e400]]}', 400,
     "NaN or infinity"),
    ("POST", "/v1/streams/target/step", '{"inputs": [[1e39]]}', 400,
     "row 0, feature 0 of \"inputs\" is too large for float32"),
    ("POST", "/v1/streams/target/step", '{"inputs": [["1"]]}', 400,
     "not a number: '1'"),
    ("POST", "/v1/streams/target/step", '{"inputs": [[true]]}', 400,
     "not a number: True"),
    ("POST", "/v1/streams/target/step",
     json.dumps({"inputs": [[0.1]] * 20}), 400, "at most 16"),
    ("POST", "/v1/streams/target/step",
     json.dumps({"inputs": [[0.1]] * 400}), 413, "over the size limit"),
    ("POST", "/v1/streams/" + "x" * 129 + "/step", '{"inputs": [[0]]}', 400,
     "stream id must be 1 to 128 printable"),
    ("POST", "/v1/streams/a%00b/step", '{"inputs": [[0]]}', 400,
     "printable"),
    ("POST", "/v1/streams/a%20b/step", '{"inputs": [[0]]}', 400,
     "without spaces"),
    ("POST", "/v1/streams/a%2Fb/step", '{"inputs": [[0]]}', 400,
     "without spaces or '/'"),
    ("POST", "/v1/streams/target/step", "[" * 1900, 400, "nests too"),
    ("POST", "/v1/streams/target/reset", '{"state": [{"h": [0], "c": [0]}]}',
     400, "\"state\": a state must be 2 (h, c) pair(s)"),
    ("POST", "/v1/streams/target/reset",
     json.dumps({"state": [{"h": [0] * 8, "c": [0] * 8},
                           {"h": [0] * 8, "c": [0] * 7}]}),
     400, "state layer 1 c must be a vector of 8 numbers; got shape [7]"),
    ("POST", "/v1/streams/target/reset",
     json.dumps({"state": [{"h": [0] * 8, "c": [0] * 8},
                           {"h": ["a"] * 8, "c": [0] * 8}]}),
     400, "state layer 1 h must be a vector of 8 numbers"),
    ("POST", "/v1/streams/target/reset", '{"steps": -1}', 400,
     "\"steps\" must be an integer >= 0"),
    ("POST", "/v1/streams/target/reset", '{"steps": 1.5}', 400,
     "\"steps\" must be an integer >= 0"),
    ("GET", "/v1/streams/nobody/state", None, 404, "no stream 'nobody'"),
    ("DELETE", "/v1/streams/nobody", None, 404, "no stream 'nobody'"),
    ("GET", "/v1/streams/target/step", None, 405, "method not allowed"),
    ("GET", "/v2/anything", None, 404, "no such endpoint"),
]


def test_bad_requests_get_a_4xx_that_says_why_and_change_no_stream(served):
    async def main():
        async with serving(served, max_body_bytes=2000, max_rows=16) as (
                server, client):
            x = [[0.3], [-0.2]]
            for sid in ("target", "bystander"):
                await post(client, f"/v1/streams/{sid}/step", {"inputs": x})
            before = [(await get(client, f"/v1/streams/{sid}/state"))[1]
                      for sid in ("target", "bystander")]
            answers = []
            for method, path, body, _, _ in BAD:
                async with client.request(method, path, data=body) as r:
                    answers.append((r.status, await r.json()))
            after = [(await get(client, f"/v1/streams/{sid}/state"))[1]
                     for sid in ("target", "bystander")]
            _, next_reply, _ = await post(
                client, "/v1/streams/target/step", {"inputs": [[0.5]]})
            _, text, _ = await get(client, "/metrics")
            return before, answers, after, next_reply, metric_samples(text)

    before, answers, after, next_reply, samples = run(main())
    for (method, path, _, status, message), (got, reply) in zip(BAD,
                                                                answers):
        assert got == status, (method, path[:60], reply)
        assert message in reply["error"], (path[:60], reply)
    assert before == after and before[0]["steps"] == 2
    want, = offline_many(served.model, [(None, [[0.3], [-0.2], [0.5]])])
    np.testing.assert_allclose(next_reply["outputs"], want[2:], atol=1e-5)
    assert samples[("lstm_ctl_rejected_total",
                    (("reason", "bad_request"),))] == sum(
                        s in (400, 413) for *_, s, _ in BAD)


def test_a_full_pool_gives_503_then_accepts_after_a_delete(served):
    async def main():
        async with serving(served, capacity=2) as (server, client):
            for sid in ("a", "b"):
                await post(client, f"/v1/streams/{sid}/step",
                           {"inputs": [[0.1]]})
            full = await post(client, "/v1/streams/c/step",
                              {"inputs": [[0.1]]})
            also = await post(client, "/v1/streams/c/reset")
            async with client.delete("/v1/streams/a") as r:
                deleted = r.status, await r.json()
            joined = await post(client, "/v1/streams/c/step",
                                {"inputs": [[0.1]]})
            b = await post(client, "/v1/streams/b/step", {"inputs": [[0.2]]})
            _, text, _ = await get(client, "/metrics")
            return full, also, deleted, joined, b, metric_samples(text)

    full, also, deleted, joined, b, samples = run(main())
    status, reply, headers = full
    assert status == 503 and "the pool is full" in reply["error"]
    assert headers["Retry-After"] == "1"
    assert also[0] == 503
    assert deleted == (200, {"stream": "a", "deleted": True, "steps": 1})
    assert joined[0] == 200 and joined[1]["steps"] == 1
    want, = offline_many(served.model, [(None, [[0.1], [0.2]])])
    np.testing.assert_allclose(b[1]["outputs"], want[1:], atol=1e-5)
    assert samples[("lstm_ctl_rejected_total", (("reason", "full"),))] == 2
    assert samples[("lstm_ctl_streams_active", ())] == 2


def test_idle_streams_are_evicted_with_the_hook_and_others_kept(served):
    evicted = []
    x = np.random.default_rng(2).uniform(-1, 1, (30, 1))

    async def main():
        async with serving(served, idle_timeout=1.0,
                           on_evict=lambda *a: evicted.append(a)) as (
                               server, client):
            await post(client, "/v1/streams/idle/step",
                       {"inputs": [[0.4], [0.1]]})
            _, idle_state, _ = await get(client, "/v1/streams/idle/state")
            outputs = []
            for t in range(25):  # 2.5 s; busy is never idle for 1 s
                _, reply, _ = await post(client, "/v1/streams/busy/step",
                                         {"inputs": [x[t].tolist()]})
                outputs += reply["outputs"]
                await asyncio.sleep(0.1)
            gone = await get(client, "/v1/streams/idle/state")
            _, text, _ = await get(client, "/metrics")
            return idle_state, outputs, gone, metric_samples(text)

    idle_state, outputs, gone, samples = run(main())
    (sid, state, steps), = evicted
    assert (sid, steps) == ("idle", 2)
    for got, want in zip(state, as_state(idle_state["state"])):
        np.testing.assert_allclose(got.h, want.h, atol=1e-7)
    assert gone[0] == 404
    want, = offline_many(served.model, [(None, x[:25])])
    np.testing.assert_allclose(outputs, want, atol=1e-5)
    assert samples[("lstm_ctl_evictions_total", ())] == 1
    assert samples[("lstm_ctl_streams_active", ())] == 1


def test_auth_needs_the_bearer_token(served, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")

    async def main():
        async with serving(served, auth_token_file=str(token)) as (
                server, client):
            body = {"inputs": [[0.1]]}
            return [
                (await post(client, "/v1/streams/a/step", body))[:2],
                (await post(client, "/v1/streams/a/step", body, headers={
                    "Authorization": "Bearer wrong"}))[:2],
                (await get(client, "/metrics"))[0],
                (await post(client, "/v1/streams/a/step", body, headers={
                    "Authorization": "Bearer s3cret"}))[0],
                (await get(client, "/healthz"))[0],
            ]

    none, wrong, metrics, right, health = run(main())
    assert none[0] == 401 and "bearer token" in none[1]["error"]
    assert wrong[0] == 401 and metrics == 401
    assert right == 200 and health == 200


def test_what_moving_a_stream_needs_list_state_and_reset_with_steps(
        served):
    """A stream moved to another server: its state and step count set by
    reset, it continues exactly; responses say which server answered."""
    x = np.random.default_rng(4).uniform(-1, 1, (7, 1))

    async def main():
        async with serving(served) as (old, a), serving(served) as (new, b):
            await post(a, "/v1/streams/m/step", {"inputs": x[:5].tolist()})
            await post(a, "/v1/streams/other/step", {"inputs": [[0.1]]})
            _, listed, _ = await get(a, "/v1/streams")
            _, state, _ = await get(a, "/v1/streams/m/state")
            moved = await post(b, "/v1/streams/m/reset", {
                "state": state["state"], "steps": state["steps"]})
            _, reply, headers = await post(b, "/v1/streams/m/step",
                                           {"inputs": x[5:].tolist()})
            return (listed, moved, reply, headers[SERVER_HEADER],
                    old.server_id, new.server_id)

    listed, moved, reply, answered_by, old_id, new_id = run(main())
    assert sorted(listed["streams"]) == ["m", "other"]
    assert moved[0] == 200 and moved[1]["steps"] == 5
    assert moved[2][SERVER_HEADER] == answered_by == new_id != old_id
    assert reply["steps"] == 7
    want, = offline_many(served.model, [(None, x)])
    np.testing.assert_allclose(reply["outputs"], want[5:], atol=1e-5)


def test_metrics_and_health(served):
    async def main():
        async with serving(served) as (server, client):
            await post(client, "/v1/streams/a/step", {"inputs": [[0.1]] * 3})
            return ((await get(client, "/metrics"))[1],
                    (await get(client, "/healthz"))[1])

    text, health = run(main())
    assert health["status"] == "ok" and health["streams"] == 1
    assert health["capacity"] == 10000
    for name in ("lstm_ctl_streams_active", "lstm_ctl_steps_total",
                 "lstm_ctl_batch_size_bucket", "lstm_ctl_step_seconds_bucket",
                 "lstm_ctl_evictions_total", "lstm_ctl_rejected_total"):
        assert name in text, name
    samples = metric_samples(text)
    assert samples[("lstm_ctl_steps_total", ())] == 3
    assert samples[("lstm_ctl_batch_size_count", ())] == 1


def test_serve_py_says_what_is_wrong_in_one_line(tmp_path, serve_run_dir):
    # serve.py's main in process (helpers.run_main): an exception that
    # escaped it, a traceback in a process, fails the test here.
    missing = run_main("serve.py", f"--model_dir={tmp_path / 'nothing'}")
    assert missing.returncode == 1
    assert "serve.py: error:" in missing.stderr
    assert "config.json not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    best = run_main("serve.py", f"--model_dir={serve_run_dir}",
                    "--checkpoint=best")
    assert best.returncode == 1 and "best does not exist" in best.stderr
    assert best.stderr.startswith("serve.py: error:")
    assert len(best.stderr.strip().splitlines()) == 1
