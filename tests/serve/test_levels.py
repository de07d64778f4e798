"""Serving a run trained on the changes of its targets
(--target_transform=changes) in levels: each stream's last known level
kept beside its state (lstm_ctl/serve/levels.py) through steps, multi-row
requests, resets, state reads and sets, deletes, evictions, snapshots and
restarts; served numbers equal the model run on the changes as training
computes them (data/transforms.py), summed back onto the levels."""

import types

import numpy as np
import pytest

from lstm_ctl.config import ServeConfig
from lstm_ctl.core.state import LSTMState
from lstm_ctl.data import readers, transforms
from lstm_ctl.serve import loading
from lstm_ctl.serve.pool import StatePool
from lstm_ctl.serve.server import Server
from helpers import offline_many
from test_server import get, post, run, serving

NORM = {"columns": ["y"], "mean": [0.8], "std": [1.7],
        "transform": "changes"}


@pytest.fixture(scope="module")
def served(make_run_dir, tmp_path_factory):
    """A csv run on the changes of its one column `y`, of the shape of the
    other serving tests' run (1 input, 1 output, 2 layers of 8 units), so
    that their compiled programs are reused."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("changes") / "run",
                           seed=3, norm=NORM)
    return loading.load(run_dir)


def trend(start, n, seed):
    """`[n, 1]` levels of a trending series (its level far from its
    changes, so that a missing or wrong level shows)."""
    rng = np.random.default_rng(seed)
    return start + np.cumsum(0.8 + rng.normal(0, 1.0, (n, 1)), axis=0)


def reference(served, segments):
    """Each `(state or None, level before it or None, levels [k, 1])` as
    training reads a stream: the changes of `transforms.table_changes` (the
    level before, when given, as the stream's row 0), normalised, through
    the model in one call, denormalised and summed onto the levels
    (`transforms.step_levels`); returns `[k, 1]` data units each."""
    task = served.units.task
    streams = []
    for _, level, rows in segments:
        y = np.asarray(rows if level is None
                       else np.concatenate([[[level]], rows]), np.float64)
        streams.append(readers.CsvStream("s", y, y.copy(),
                                         list(range(len(y)))))
    table, levels = transforms.table_changes(
        readers.CsvTable(["y"], ["y"], streams))
    mean, std = np.array(NORM["mean"]), np.array(NORM["std"])
    start = [1 if level is None else 2 for _, level, _ in segments]
    x = [(s.inputs[a - 1:] - mean) / std
         for s, a in zip(table.streams, start)]
    # The reference is training's: a change is not the difference of the
    # rows as they were sent (row 0 of a stream: no change).
    assert all(s.inputs[0, 0] == 0 for s in table.streams)
    y = offline_many(served.model, [(state, xi) for (state, _, _), xi
                                    in zip(segments, x)])
    return [transforms.step_levels(task, types.SimpleNamespace(levels=lv),
                                   yi, a)
            for lv, yi, a in zip(levels, y, start)]


def random_state(rng, served):
    m = served.model
    return tuple(LSTMState(rng.standard_normal(m.units).astype(np.float32),
                           rng.standard_normal(m.units).astype(np.float32))
                 for _ in range(m.num_layers))


# ---------------------------------------------------------------- numbers
def test_served_levels_equal_the_model_on_training_changes(served, tmp_path):
    """Multi-row requests of streams stepping together, a reset (the next
    row is a first row again), a state read, delete and set back, a reset
    to a given state and level, and a restart from the snapshot; every
    served row equals the reference to 1e-5."""
    a = trend(50.0, 9, 0)
    b = trend(-20.0, 8, 1)
    a2 = trend(400.0, 5, 2)
    c = trend(7.0, 4, 3)
    given = random_state(np.random.default_rng(5), served)
    path = "/v1/streams/%s/step"

    async def step(client, sid, rows):
        status, reply, _ = await post(client, path % sid,
                                      {"inputs": rows.tolist()})
        assert status == 200, reply
        return reply

    async def first(client):
        import asyncio
        out = {}
        out["a0"], out["b0"] = await asyncio.gather(
            step(client, "a", a[:3]), step(client, "b", b[:2]))
        out["a1"] = await step(client, "a", a[3:4])
        out["b1"] = await step(client, "b", b[2:5])
        _, saved, _ = await get(client, "/v1/streams/b/state")
        async with client.delete("/v1/streams/b") as r:
            assert r.status == 200
        out["b_set"] = await post(client, "/v1/streams/b/reset", saved)
        out["b2"] = await step(client, "b", b[5:6])
        out["a2"] = await step(client, "a", a[4:6])
        assert (await post(client, "/v1/streams/a/reset"))[0] == 200
        _, out["a_reset"], _ = await get(client, "/v1/streams/a/state")
        out["a3"] = await step(client, "a", a2[:2])
        status, _, _ = await post(client, "/v1/streams/c/reset", {
            "state": [{"h": s.h.tolist(), "c": s.c.tolist()} for s in given],
            "level": [5.0], "steps": 3})
        assert status == 200
        out["c0"] = await step(client, "c", c[:2])
        out["saved"] = saved
        return out

    async def second(client):
        return {"a4": await step(client, "a", a2[2:]),
                "b3": await step(client, "b", b[6:]),
                "c1": await step(client, "c", c[2:3]),
                "c2": await step(client, "c", c[3:])}

    async def main():
        async with serving(served, snapshot_dir=str(tmp_path)) as (s, cl):
            out = await first(cl)
        # Stopped: its snapshot holds the levels; a new server continues.
        async with serving(served, snapshot_dir=str(tmp_path)) as (s, cl):
            assert sorted(s.restored) == ["a", "b", "c"]
            _, out["c_restored"], _ = await get(cl, "/v1/streams/c/state")
            out.update(await second(cl))
        return out

    out = run(main())
    saved = out["saved"]
    assert saved["steps"] == 5 and saved["level"] == [b[4, 0]]
    assert out["b_set"][0] == 200 and out["b_set"][1]["steps"] == 5
    assert out["a_reset"]["level"] == [None] and out["a_reset"]["steps"] == 0
    assert out["c_restored"]["level"] == [c[1, 0]]
    assert out["c_restored"]["steps"] == 5
    assert [out[k]["steps"] for k in ("a4", "b3", "c1", "c2")] == \
        [5, 8, 6, 7]
    want_a, want_b, want_a2, want_c = reference(served, [
        (None, None, a[:6]), (None, None, b),
        (None, None, a2),
        (given, 5.0, c)])
    got = {"a": np.concatenate([out[k]["outputs"] for k in
                                ("a0", "a1", "a2")]),
           "b": np.concatenate([out[k]["outputs"] for k in
                                ("b0", "b1", "b2", "b3")]),
           "a2": np.concatenate([out[k]["outputs"] for k in ("a3", "a4")]),
           "c": np.concatenate([out[k]["outputs"] for k in
                                ("c0", "c1", "c2")])}
    for name, want in (("a", want_a), ("b", want_b), ("a2", want_a2),
                       ("c", want_c)):
        np.testing.assert_allclose(got[name], want, atol=1e-5, rtol=0,
                                   err_msg=name)


def test_a_stream_moved_by_move_streams_takes_its_level_along(served):
    """deploy/move_streams.py (in process, against two in-process servers,
    the second standing in for nginx): the moved stream continues exactly,
    its first row there a change against its level."""
    import asyncio
    import io
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "deploy"))
    import move_streams
    x = trend(30.0, 6, 7)

    async def main():
        async with serving(served) as (_, old), serving(served) as (_, new):
            first = await post(old, "/v1/streams/m/step",
                               {"inputs": x[:4].tolist()})
            moved = await asyncio.get_running_loop().run_in_executor(
                None, move_streams.move, str(new.make_url("")).rstrip("/"),
                [str(old.make_url("")).rstrip("/")], None, io.StringIO())
            left = await get(old, "/v1/streams")
            after = await post(new, "/v1/streams/m/step",
                               {"inputs": x[4:].tolist()})
            return first[1], moved, left[1], after[1]

    first, moved, left, after = run(main())
    assert moved == (1, 0) and left["streams"] == []
    assert after["steps"] == 6
    want, = reference(served, [(None, None, x)])
    np.testing.assert_allclose(
        np.concatenate([first["outputs"], after["outputs"]]), want,
        atol=1e-5, rtol=0)


# ------------------------------------------------------------ bookkeeping
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_pool_keeps_a_level_per_stream_beside_its_state(served,
                                                            tmp_path):
    """Unknown (NaN) at a join, after a reset to the initial state or to a
    state without one, on a slot a stream left; recorded by a step, set by
    a reset; given to the eviction hook; in snapshots. A pool of a levels
    run keeps none and refuses one."""
    clock, evicted = FakeClock(), []
    pool = StatePool(served.model, capacity=2, idle_timeout=10,
                     clock=clock, level_dim=1,
                     on_evict=lambda *args: evicted.append(args))
    x = np.zeros((2, 1), np.float32)
    pool.step(["a", "b"], x, levels=[[1.5], [2.5]])
    assert pool.level("a") == [1.5] and pool.level("b") == [2.5]
    pool.step(["a"], x[:1])                      # levels not given: kept
    assert pool.level("a") == [1.5]
    pool.end("b")
    pool.step(["c"], x[:1])                      # b's slot, not its level
    assert np.isnan(pool.level("c")).all()
    pool.reset("c", level=[4.0], steps=2)
    assert pool.level("c") == [4.0] and pool.steps("c") == 2
    state = random_state(np.random.default_rng(0), served)
    pool.reset("a", state)                       # a state without a level
    assert np.isnan(pool.level("a")).all()
    pool.reset("a", state, 0, pool.level("a"))   # NaN: unknown, as read
    assert np.isnan(pool.level("a")).all()
    pool.reset("a", state, level=[-3.0])
    path = pool.snapshot(str(tmp_path / "p.npz"))
    restored = StatePool(served.model, capacity=2, level_dim=1)
    restored.restore(path)
    assert restored.level("a") == [-3.0] and restored.level("c") == [4.0]
    pool.reset("a")                              # the initial state
    assert np.isnan(pool.level("a")).all()
    pool.reset("a", level=[7.0])
    clock.now = 11.0
    assert sorted(pool.evict_idle()) == ["a", "c"]
    assert {e[0]: (e[2], float(e[3][0])) for e in evicted} == {
        "a": (0, 7.0), "c": (2, 4.0)}
    # The server's hook gets it too.
    server = Server(served, ServeConfig(model_dir="unused", port=0,
                                        idle_timeout=10),
                    on_evict=lambda *args: evicted.append(args), clock=clock)
    server.pool.reset("z", level=[8.0])
    clock.now = 22.0
    server.pool.evict_idle()
    assert evicted[-1][0] == "z" and evicted[-1][3] == [8.0]
    # Levels runs: none kept, none taken, their snapshots have none.
    plain = StatePool(served.model, capacity=2)
    with pytest.raises(ValueError, match="holds levels of 1 target column"):
        plain.restore(path)
    plain.step(["a"], x[:1])
    with pytest.raises(ValueError, match="this run forecasts levels"):
        plain.reset("a", level=[1.0])
    with pytest.raises(ValueError, match=r"levels must be \[1, 0\]"):
        plain.step(["a"], x[:1], levels=[[1.0]])
    assert plain.steps("a") == 1 and plain.level("a").shape == (0,)
    with pytest.raises(ValueError, match="holds no levels"):
        restored.restore(plain.snapshot(str(tmp_path / "plain.npz")))
    assert restored.level("a") == [-3.0]         # a failed restore: no change


def test_a_bad_level_or_row_is_a_400_that_changes_nothing(
        served, serve_run_dir):
    too_big = 3.0e38
    NaN = float("nan")  # JSON's NaN literal: refused (null is unknown)

    async def main():
        async with serving(served) as (_, client):
            model = (await get(client, "/v1/model"))[1]
            answers = [await post(client, "/v1/streams/a/reset", body)
                       for body in ({"level": "x"}, {"level": [1.0, 2.0]},
                                    {"level": [True]}, {"level": [NaN]},
                                    {"level": [too_big], "steps": 1})]
            # The level given and a row far below it: a change too large
            # for float32 once normalised, found on the pool's thread.
            answers.append(await post(client, "/v1/streams/a/step",
                                      {"inputs": [[-too_big]]}))
            answers.append(await get(client, "/v1/streams/a/state"))
        async with serving(loading.load(serve_run_dir)) as (_, client):
            answers.append(await post(client, "/v1/streams/s/reset",
                                      {"level": [1.0]}))
            answers.append(await post(client, "/v1/streams/s/reset",
                                      {"level": None}))
            answers.append(await get(client, "/v1/streams/s/state"))
        return model, answers

    model, answers = run(main())
    assert model["target_transform"] == "changes"
    assert "summed onto the row's level" in model["outputs"]
    (bad_type, bad_len, bad_bool, bad_nan, ok, overflow, state, levels_run,
     levels_null, levels_state) = [a[:2] for a in answers]
    for status, reply in (bad_type, bad_len, bad_bool, bad_nan):
        assert status == 400
        assert reply["error"].startswith("\"level\": a level must be null "
                                          "or a list of 1 values")
    assert "got [1.0, 2.0]" in bad_len[1]["error"]
    assert "value 0 is True" in bad_bool[1]["error"]
    assert ok[0] == 200
    assert overflow[0] == 400
    assert "too large for float32 once normalised" in overflow[1]["error"]
    assert state[1]["steps"] == 1 and state[1]["level"] == [too_big]
    assert levels_run[0] == 400
    assert "this run forecasts levels" in levels_run[1]["error"]
    assert levels_null[0] == 200 and "level" not in levels_state[1]


def test_units_of_a_changes_run_turn_target_columns_into_changes(tmp_path):
    """Only the target columns become changes (against the level before
    them; none known: 0), normalised by the changes' statistics; outputs
    are summed onto each row's level. A target that is not an input has no
    level in a request: such a run is refused, saying why."""
    import json
    from lstm_ctl import config as config_lib
    from lstm_ctl.data import tasks
    from lstm_ctl.data.task_classes import from_run
    from lstm_ctl.data.units import Units
    with open(tmp_path / tasks.NORM_FILE, "w") as f:
        json.dump({"columns": ["a", "b", "c"], "mean": [1.0, 2.0, 3.0],
                   "std": [2.0, 4.0, 8.0], "transform": "changes"}, f)
    data = config_lib.DataConfig(task="csv", csv_file="x.csv",
                                 input_columns=("a", "b", "c"),
                                 target_columns=("c", "a"))
    units = Units(from_run(data, str(tmp_path)))
    assert units.level_dim == 2
    rows = [[3, 10, 11], [5, 14, 27]]
    # a: a change (0 at the first row), b: a level, c: a change.
    np.testing.assert_allclose(units.encode(rows), [
        [(0 - 1) / 2, (10 - 2) / 4, (0 - 3) / 8],
        [(2 - 1) / 2, (14 - 2) / 4, (16 - 3) / 8]])
    # The level is in target order: c unknown, a known.
    np.testing.assert_allclose(units.encode(rows[:1], [np.nan, 1.0])[0],
                               [(2 - 1) / 2, 2.0, (0 - 3) / 8])
    np.testing.assert_allclose(units.levels_of(units.read(rows)),
                               [[11, 3], [27, 5]])
    np.testing.assert_allclose(
        units.decode([[1.0, -1.0]], [[11.0, 3.0]]),
        [[11 + 1 * 8 + 3, 3 - 1 * 2 + 1]])
    apart = config_lib.DataConfig(task="csv", csv_file="x.csv",
                                  input_columns=("a", "b"),
                                  target_columns=("c", "a"))
    with pytest.raises(ValueError, match=r"target column\(s\) \['c'\] are "
                                         r"not input columns"):
        from_run(apart, str(tmp_path))
