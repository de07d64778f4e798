"""StatePool against the model itself: a stream stepped in the pool (any
batch, any number of rows, joins, leaves, resets to given states) equals
the same stream run through LSTMModel in one call; capacity, eviction,
snapshots, no retracing; loading a run dir and its units."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl.core.model import LSTMModel
from lstm_ctl.core.state import LSTMState
from lstm_ctl.data import tasks
from lstm_ctl.data.task_classes import from_run
from lstm_ctl.data.units import Units, UnitsError
from lstm_ctl.serve import loading
from lstm_ctl.serve.pool import PoolFullError, StatePool, UnknownStreamError
from helpers import offline_many

D, O, H, L = 3, 2, 8, 2


@pytest.fixture(scope="module")
def model():
    m = LSTMModel(units=H, output_dim=O, num_layers=L, input_dim=D,
                  initial_state_mode="learned", seed=0)
    rng = np.random.default_rng(1)
    for v in m.weights:  # the learned initial state is not zeros
        v.assign(0.5 * rng.standard_normal(v.shape).astype(np.float32))
    return m


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def offline(model, rows, state=None):
    """The stream's rows through the model in one call, `[k, O]`."""
    return offline_many(model, [(state, rows)])[0]


def random_state(rng):
    return tuple(LSTMState(rng.standard_normal(H).astype(np.float32),
                           rng.standard_normal(H).astype(np.float32))
                 for _ in range(L))


def test_streams_equal_the_model_run_offline_in_one_call(model):
    """Random joins, leaves, resets (to the initial state and to given
    values) and multi-row steps of streams of different lengths in one
    batch; each segment of each stream equals one call of the model."""
    rng = np.random.default_rng(0)
    pool = StatePool(model, capacity=12, buckets=(2, 8))
    # A segment: (initial state or None, rows, pool outputs) from a join
    # or reset on.
    segments, live = [], {}
    for _ in range(40):
        names = [f"s{i}" for i in range(16)]
        chosen = list(rng.choice(names, size=int(rng.integers(1, 9)),
                                 replace=False))
        for sid in list(chosen):
            if sid in live and rng.random() < 0.15:  # leaves
                pool.end(sid)
                segments.append(live.pop(sid))
                chosen.remove(sid)
            elif sid in live and rng.random() < 0.15:  # reset
                given = random_state(rng) if rng.random() < 0.5 else None
                pool.reset(sid, given)
                segments.append(live.pop(sid))
                live[sid] = (given, [], [])
                assert pool.steps(sid) == 0
        joining = [s for s in chosen if s not in live]
        if len(joining) > pool.free_slots:
            chosen = [s for s in chosen if s in live] + \
                joining[:pool.free_slots]
        if not chosen:
            continue
        rows = [rng.standard_normal((int(rng.integers(1, 4)), D))
                .astype(np.float32) for _ in chosen]
        outputs = pool.step(chosen, rows)
        for sid, x, y in zip(chosen, rows, outputs):
            seg = live.setdefault(sid, (None, [], []))
            seg[1].extend(x)
            seg[2].extend(y)
            assert pool.steps(sid) == len(seg[1])
    segments += live.values()
    assert sum(len(s[1]) for s in segments) > 100
    segments = [s for s in segments if s[1]]
    for (_, _, got), want in zip(segments, offline_many(
            model, [(given, rows) for given, rows, _ in segments])):
        np.testing.assert_allclose(np.array(got), want, atol=1e-5)
    # Every batch size and length: one trace of the one-row step and one of
    # the multi-row loop.
    assert pool.trace_count == 2


def test_one_row_per_stream_as_an_array_and_the_state_read_back(model):
    pool = StatePool(model, capacity=4)
    x = np.random.default_rng(2).standard_normal((5, 2, D)).astype(
        np.float32)
    ys = [pool.step(["a", "b"], x[t]) for t in range(5)]  # [B, D] -> [B, O]
    assert ys[0].shape == (2, O)
    ref = offline(model, x[:, 1])
    np.testing.assert_allclose(np.array(ys)[:, 1], ref, atol=1e-5)
    for got, want in zip(pool.state("b"), offline_many.final_state):
        np.testing.assert_allclose(got.h, want.h[0], atol=1e-5)
        np.testing.assert_allclose(got.c, want.c[0], atol=1e-5)


def test_batches_are_padded_to_a_few_bucket_sizes(model):
    assert StatePool(model, capacity=1000).buckets == (
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
    pool = StatePool(model, capacity=12, buckets=(2, 8, 50))
    assert pool.buckets == (2, 8, 12)
    assert [pool._bucket(b) for b in (1, 2, 3, 8, 9, 12)] == [
        2, 2, 8, 8, 12, 12]


def test_a_new_stream_starts_from_the_learned_initial_state(model):
    pool = StatePool(model, capacity=2)
    pool.warmup()  # traces both functions on the scratch row only
    assert pool.trace_count == 2 and len(pool) == 0
    pool.reset("a")
    for got, want in zip(pool.state("a"), model.initial_state(1)):
        assert np.abs(want.h).max() > 0.1  # learned, not zeros
        np.testing.assert_allclose(got.h, want.h[0])
        np.testing.assert_allclose(got.c, want.c[0])


def test_a_full_pool_refuses_new_ids_and_changes_nothing(model):
    pool = StatePool(model, capacity=2)
    x = np.ones((2, D), np.float32)
    pool.step(["a", "b"], x)
    before = pool.state("a")
    with pytest.raises(PoolFullError, match="the pool is full: 2 of 2"):
        pool.step(["a", "c"], x)
    assert pool.steps("a") == 1 and "c" not in pool
    np.testing.assert_array_equal(pool.state("a")[0].h, before[0].h)
    pool.end("b")
    pool.step(["a", "c"], x)
    assert pool.steps("a") == 2 and pool.steps("c") == 1


def test_idle_streams_are_evicted_with_the_hook_and_others_kept(model):
    clock, seen = FakeClock(), []
    pool = StatePool(model, capacity=3, idle_timeout=10.0, clock=clock,
                     on_evict=lambda *a: seen.append(a))
    x = np.random.default_rng(3).standard_normal((4, D)).astype(np.float32)
    pool.step(["idle", "busy"], [x[:2], x[:1]])
    idle_state = pool.state("idle")
    clock.now = 8.0
    pool.step(["busy"], [x[1:3]])
    clock.now = 12.0
    assert pool.evict_idle() == ["idle"]
    (sid, state, steps), = seen
    assert sid == "idle" and steps == 2
    np.testing.assert_array_equal(state[1].c, idle_state[1].c)
    with pytest.raises(UnknownStreamError, match="no stream 'idle'"):
        pool.state("idle")
    got = pool.step(["busy"], [x[3:4]])[0]
    np.testing.assert_allclose(got, offline(model, x[:4])[3:], atol=1e-5)
    # A full pool makes room by evicting idle streams before refusing.
    pool.step(["p", "q"], np.zeros((2, D), np.float32))
    clock.now = 30.0
    pool.step(["r"], np.zeros((1, D), np.float32))
    assert set(pool.ids()) == {"r"}


def test_snapshot_and_restore_continue_exactly(model, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, D)).astype(np.float32)
    pool = StatePool(model, capacity=5)
    pool.step(["a", "b", "c"], [x[0, :2], x[1, :3], x[2, :1]])
    given = random_state(rng)
    pool.reset("c", given)
    pool.step(["c"], [x[2, 1:2]])
    path = pool.snapshot(str(tmp_path / "pool.npz"))
    assert os.listdir(tmp_path) == ["pool.npz"]
    other = StatePool(model, capacity=4)
    assert sorted(other.restore(path)) == ["a", "b", "c"]
    assert [other.steps(s) for s in "abc"] == [2, 3, 1]
    out = other.step(["a", "b", "c", "d"],
                     [x[0, 2:], x[1, 3:], x[2, 2:4], x[2, :2]])
    np.testing.assert_allclose(out[0], offline(model, x[0])[2:], atol=1e-5)
    np.testing.assert_allclose(out[1], offline(model, x[1])[3:], atol=1e-5)
    np.testing.assert_allclose(out[2], offline(model, x[2, 1:4], given)[1:],
                               atol=1e-5)
    np.testing.assert_allclose(out[3], offline(model, x[2, :2]), atol=1e-5)


def test_a_failed_snapshot_leaves_the_previous_one(model, tmp_path,
                                                   monkeypatch):
    pool = StatePool(model, capacity=2)
    pool.step(["a"], np.ones((1, D), np.float32))
    path = pool.snapshot(str(tmp_path / "pool.npz"))
    pool.step(["a"], np.ones((1, D), np.float32))

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        pool.snapshot(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["pool.npz"]  # no temporary file left
    other = StatePool(model, capacity=2)
    other.restore(path)
    assert other.steps("a") == 1


def test_errors_say_what_is_wrong(model, tmp_path):
    pool = StatePool(model, capacity=3)
    x = np.zeros((2, D), np.float32)
    with pytest.raises(ValueError, match=r"\['a'\] appear more than once"):
        pool.step(["a", "a"], x)
    with pytest.raises(ValueError, match=r"must be \[k, 3\].*got shape "
                                         r"\[1, 2\]"):
        pool.step(["a"], [np.zeros((1, 2))])
    with pytest.raises(ValueError, match="state layer 1 c must be a vector "
                                         "of 8 numbers; got shape"):
        pool.reset("a", [(np.zeros(H), np.zeros(H)),
                         (np.zeros(H), np.zeros(3))])
    with pytest.raises(ValueError, match="2 \\(h, c\\) pair"):
        pool.reset("a", [(np.zeros(H), np.zeros(H))])
    with pytest.raises(ValueError, match="NaN or infinity"):
        pool.reset("a", [(np.zeros(H), np.zeros(H)),
                         (np.full(H, np.nan), np.zeros(H))])
    assert len(pool) == 0  # nothing joined on an error
    with pytest.raises(UnknownStreamError, match="no stream 'x'"):
        pool.end("x")
    with pytest.raises(ValueError, match="capacity must be a positive"):
        StatePool(model, capacity=0)
    small = LSTMModel(units=4, output_dim=1, input_dim=D)
    pool.step(["a"], x[:1])
    path = pool.snapshot(str(tmp_path / "p.npz"))
    with pytest.raises(ValueError, match="1 of 4"):
        StatePool(small, capacity=2).restore(path)
    with open(path, "r+b") as f:  # damaged
        f.truncate(100)
    with pytest.raises(ValueError, match="p.npz cannot be read"):
        StatePool(model, capacity=2).restore(path)


# ---------------------------------------------------------------- loading
def test_a_run_dir_loads_its_checkpoint_latest_best_or_path(
        serve_run_dir, make_run_dir, tmp_path):
    served = loading.load(serve_run_dir)
    assert served.checkpoint.endswith("ckpt-7")
    assert served.model.initial_state_mode == "learned"
    assert loading.load(serve_run_dir, served.checkpoint).checkpoint == \
        served.checkpoint
    with pytest.raises(FileNotFoundError, match="best does not exist"):
        loading.load(serve_run_dir, "best")
    run = make_run_dir(tmp_path / "run", seed=1)
    make_run_dir(tmp_path / "run" / "best", seed=2, step=3)
    best = loading.load(run, "best")
    assert best.checkpoint.endswith(os.path.join("best", "ckpt-3"))
    assert not np.allclose(best.model.cell_0.kernel,
                           loading.load(run).model.cell_0.kernel)
    with pytest.raises(FileNotFoundError, match="ckpt-99.index"):
        loading.load(run, os.path.join(run, "ckpt-99"))
    os.remove(os.path.join(run, "best", "checkpoint"))  # no index file
    assert loading.load(run, "best").checkpoint == best.checkpoint


def test_serving_never_imports_training_or_evaluation():
    """serve -> run -> core, data -> config: no import of train or eval."""
    import ast
    import pathlib
    root = pathlib.Path(loading.__file__).parents[1]
    for path in [*(root / "serve").glob("*.py"), root / "data" / "units.py",
                 root.parent / "serve.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names]
                     if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [])
            for name in names:
                assert not name.startswith(("lstm_ctl.train",
                                            "lstm_ctl.eval")), (path, name)


def test_units_of_csv_and_text_runs(tmp_path):
    from lstm_ctl import config as config_lib
    csv = config_lib.DataConfig(task="csv", csv_file="x.csv",
                                input_columns=("a", "b"),
                                target_columns=("b", "c"))
    with open(tmp_path / tasks.NORM_FILE, "w") as f:
        json.dump({"columns": ["a", "b", "c"], "mean": [1.0, 2.0, 3.0],
                   "std": [2.0, 4.0, 8.0]}, f)
    units = Units(from_run(csv, str(tmp_path)))
    np.testing.assert_allclose(units.encode([[3, 6], [1.0, 2]]),
                               [[1, 1], [0, 0]])
    np.testing.assert_allclose(units.decode([[1.0, -1.0]]), [[6.0, -5.0]])
    with pytest.raises(UnitsError, match="row 1 of \"inputs\" must be a "
                                         "list of 2 number"):
        units.encode([[1, 2], [3]])
    with pytest.raises(UnitsError, match="NaN or infinity"):
        units.encode([[1, float("nan")]])
    with pytest.raises(UnitsError, match="not a number: 'x'"):
        units.encode([[1, "x"]])
    text = config_lib.DataConfig(task="text", text_file="t.txt")
    with pytest.raises(FileNotFoundError, match="vocab.json not found"):
        from_run(text, str(tmp_path))
    with open(tmp_path / tasks.VOCAB_FILE, "w") as f:
        json.dump(["a", "b", "c"], f)
    units = Units(from_run(text, str(tmp_path)))
    np.testing.assert_array_equal(units.encode("ca"), [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(units.encode(["c", ["a"]]),
                                  [[0, 0, 1], [1, 0, 0]])
    probs = np.array(units.decode([[0.0, 1.0, 2.0]]))
    np.testing.assert_allclose(probs.sum(), 1.0)
    np.testing.assert_allclose(probs, tf.nn.softmax([[0.0, 1.0, 2.0]]),
                               rtol=1e-6)
    with pytest.raises(UnitsError, match=r"not in the model's vocabulary: "
                                         r"\['z'\]"):
        units.encode("az")
