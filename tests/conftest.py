"""Test set-up, before TensorFlow starts: quiet logs, a persistent XLA
cache, one intra-op thread per process, the CPU split into two logical
devices so that MirroredStrategy has two replicas to use, and in process
one batch shard per layer."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA's compiled programs are kept on disk and shared by the two test
# workers and by every train.py/evaluate.py/serve.py process a test starts
# (they inherit the variable): the same layer is compiled once, not once per
# process. Keys are fingerprints of the program, so a stale entry is unused.
os.environ.setdefault(
    "TF_XLA_FLAGS", "--tf_xla_persistent_cache_directory=" + os.path.join(
        tempfile.gettempdir(), "lstm_ctl_tests_xla_cache"))

# XLA's CPU backend tuned to compile, not to run: the tests' programs are
# tiny, so compiling them costs more than running them, and in a new
# checkout (CI) about 850 programs compile. LLVM at optimisation level 0
# compiles about a quarter faster; skipping LLVM's expensive passes took
# another 12% off the fused-layer tests with a cold cache (69-70 -> 59-64 s
# of CPU); the legacy fusion emitters and codegen in one piece instead of
# split for parallel compilation take compiling a new shape of a 2-layer
# train step from 0.25-0.29 s of CPU to 0.15-0.19 s. The numerics are
# XLA's (no fast math at any setting); only how the code is generated
# differs.
os.environ.setdefault("XLA_FLAGS", " ".join([
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_parallel_codegen_split_count=1"]))

# One thread per op: the two test workers (and the processes the e2e tests
# start) already keep both cores busy, and a second intra-op thread per
# process only spins while it waits for work, about a third more CPU time
# for the same tests. Inter-op threads stay at TensorFlow's default (one per
# core): batch shards and MirroredStrategy's replicas run on those.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")


def _start_tensorflow():
    """The CPU split into two logical devices, before TensorFlow uses it,
    and grappler off; in every process that runs tests (pytest_configure
    below)."""
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from helpers import set_grappler
    set_grappler(False)
    # One shard per layer: a batch cut into shards gives the same numbers
    # (tests/core/test_fused.py and test_tape_forward.py force shards and
    # check them), but with the batch unknown when tracing, every shard
    # count is traced and compiled as a branch of its own. The processes
    # the e2e tests start shard as users' do.
    from lstm_ctl.core import shards
    shards._cores = lambda: 1


import gc  # noqa: E402
import socket  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_run_dir(model_dir, units=8, num_layers=2, step=7, seed=0,
                  vocab=None, norm=None):
    """A run dir as train.py leaves it (config.json, a checkpoint of the
    model, optimizer and step in the model dir), with random weights and a
    random learned initial state instead of training: task sine, or text
    over `vocab` (a vocab.json is written), or csv with the
    normalization.json `norm` (its columns the inputs, the last one the
    target; its "transform" the run's --target_transform)."""
    import json
    import tensorflow as tf
    from lstm_ctl import config as config_lib
    from lstm_ctl.data import tasks
    from lstm_ctl.data.task_classes import from_run
    from lstm_ctl.run import builders, checkpoints
    data = (config_lib.DataConfig(seq_len=5, batch_size=2, seed=seed)
            if vocab is None
            else config_lib.DataConfig(task="text", text_file="t.txt",
                                       seq_len=5, batch_size=2, seed=seed))
    if norm is not None:
        data = config_lib.DataConfig(
            task="csv", csv_file="d.csv", input_columns=tuple(
                norm["columns"]), target_columns=(norm["columns"][-1],),
            target_transform=norm.get("transform", "levels"), seq_len=5,
            batch_size=2, seed=seed)
    config = config_lib.TrainConfig(
        model_dir=str(model_dir),
        model=config_lib.ModelConfig(units=units, num_layers=num_layers,
                                     initial_state_mode="learned"),
        data=data)
    os.makedirs(model_dir, exist_ok=True)
    if vocab is not None:
        with open(os.path.join(model_dir, tasks.VOCAB_FILE), "w") as f:
            json.dump(list(vocab), f)
    if norm is not None:
        with open(os.path.join(model_dir, tasks.NORM_FILE), "w") as f:
            json.dump(norm, f)
    model = builders.build_model(config, from_run(config, model_dir))
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(0.5 * rng.standard_normal(v.shape).astype(np.float32))
    optimizer = builders.build_optimizer(config)
    optimizer.build(model.trainable_variables)
    config_lib.save(config, str(model_dir))
    checkpoints.Checkpoints(
        str(model_dir), 3, model=model, optimizer=optimizer,
        step=tf.Variable(step, dtype=tf.int64)).save(step)
    return str(model_dir)


@pytest.fixture(scope="module", autouse=True)
def _collect_after_module():
    """Frees what a module's tests left in reference cycles (Keras fits and
    their tf.data iterators, which keep tf.data's autotuning) between
    modules: the deletion of such an iterator has held a worker idle for up
    to a minute (data/pipelines.py `finish`), and a boundary is the place
    to pay it where it shows."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def serve_run_dir(tmp_path_factory):
    """One tiny sine run dir (2 layers of 8 units) shared by the serving
    tests."""
    return _make_run_dir(tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="session")
def free_port():
    """A function that returns a free TCP port on 127.0.0.1."""
    return _free_port


@pytest.fixture(scope="session")
def make_run_dir():
    """`make_run_dir(model_dir, units=8, num_layers=2, step=7, seed=0,
    vocab=None, norm=None)`: a tiny sine (or text, or csv) run dir with
    random weights, in train.py's layout."""
    return _make_run_dir


# The longest modules first, by their wall time in a cold-cache run (about
# 9 s or more; the rest follow in collection order): `make test` hands
# whole modules to the two workers (--dist loadfile), and a long one started
# last would run alone at the end while the other worker idles. The two
# that start processes go first. pytest-xdist would order the modules by
# their number of tests (a one-test e2e module last); here they go in this
# order.
LONGEST_FIRST = (
    "e2e/test_kill.py", "e2e/test_multi_worker.py", "core/test_fitting.py",
    "train/test_distribute.py", "train/test_trainer.py", "core/test_fused.py",
    "core/test_precision.py", "train/test_reliability.py",
    "e2e/test_serve_signals.py", "eval/test_forecast.py",
    "test_evaluate_trust.py", "core/test_model.py", "eval/test_engine.py",
    "eval/test_engine_promises.py", "train/test_trainer_promises.py",
    "serve/test_export.py", "train/test_signals.py",
    "core/test_tape_forward.py", "core/test_model_promises.py",
    "train/test_state_policy.py", "test_data_py.py", "data/test_readers.py",
    "data/test_readers_formats.py", "test_evaluate_py.py",
    "data/test_transform.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return next((i for i, name in enumerate(LONGEST_FIRST)
                     if path.endswith(name)), len(LONGEST_FIRST))
    items.sort(key=rank)   # stable: the rest keeps its order


def pytest_collection_finish(session):
    """What is alive after collection (TensorFlow, Keras, the test
    modules: about 350,000 objects that live as long as the process) moves
    out of the collector's sight: a full collection then walks only what
    the tests made since, and `_collect_after_module`'s gc.collect() drops
    from about 0.2 s of CPU to next to nothing, while still freeing every
    cycle that a module's tests left."""
    gc.collect()
    gc.freeze()


def pytest_configure(config):
    # The xdist controller (`make test`: -n 2) only hands out modules and
    # collects reports: it does not start TensorFlow (about 6 s before the
    # workers could start); the workers and a run without -n do.
    if not getattr(config.option, "numprocesses", None) or hasattr(
            config, "workerinput"):
        _start_tensorflow()
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist
        config.option.loadscopereorder = False
