"""State policies: stored state and burn-in, against hand-run references."""

import io
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator)

from helpers import run_main
from lstm_ctl.data import tasks as data
from lstm_ctl.data import losses
from lstm_ctl.train import state_policy as policy_lib
from lstm_ctl.train import trainer
from lstm_ctl.run.builders import build_model
from lstm_ctl.config import DataConfig, ModelConfig, TrainConfig
from lstm_ctl.core.state import LSTMState

ATOL = 1e-5


def short_streams(seed):
    """Streams of 5 to 13 steps, so that streams start inside chunks."""
    rng = np.random.default_rng(seed)
    while True:
        length = int(rng.integers(5, 14))
        yield rng.standard_normal((length, 1)).astype(np.float32)


@pytest.fixture
def short_sine(monkeypatch):
    """The sine task as 48-step lanes of short streams."""
    monkeypatch.setitem(data.SINE_LANE_STEPS, "train", 48)
    monkeypatch.setattr(data, "sine_streams", short_streams)


def config(tmp_path, name="run", **kwargs):
    values = dict(model_dir=str(tmp_path / name), model=ModelConfig(units=8),
                  data=DataConfig(seq_len=4, batch_size=3), train_steps=30,
                  log_every=5, hist_every=1000, checkpoint_every=1000,
                  lr_schedule="constant", learning_rate=1e-2,
                  state_mode="stored")
    values.update(kwargs)
    return TrainConfig(**values)


def record_steps(t):
    """Wraps the train step: keeps each batch, the weights before it and
    what it returned."""
    log, step = [], t.train_step

    def recorded(batch, state, force):
        weights = [v.numpy() for v in t.model.weights]
        out = step(batch, state, force)
        log.append((batch, weights, out))
        return out

    t.train_step = recorded
    return log


def rows(state, i):
    return tuple(LSTMState(s.h[i:i + 1], s.c[i:i + 1]) for s in state)


def test_stored_chunk_starts_from_its_predecessors_latest_final_state(
        tmp_path, short_sine):
    t = trainer.Trainer(config(tmp_path), out=io.StringIO())
    log = record_steps(t)
    t.run()
    probe = build_model(t.config, t.task)
    latest, written = {}, {}  # chunk -> its final state, its step
    chunks_per_lane = t.arrays.steps // 4
    used_stored = 0
    for step, (batch, weights, (metrics, kept, _)) in enumerate(log):
        for v, w in zip(probe.weights, weights):
            v.assign(w)
        ages = []
        for i, chunk in enumerate(batch["chunk"].numpy()):
            before = chunk - 1
            lane, k = divmod(chunk, chunks_per_lane)
            fresh = bool(t.arrays.resets[lane, k * 4]) or before not in latest
            start = (probe.initial_state(1) if fresh else latest[before])
            if not fresh:
                ages.append(step - written[before])
            _, want = probe(batch["inputs"][i:i + 1], initial_state=start,
                            reset_mask=batch["reset_mask"][i:i + 1])
            for got, exp in zip(rows(kept, i), want):
                np.testing.assert_allclose(got.h, exp.h, atol=ATOL)
                np.testing.assert_allclose(got.c, exp.c, atol=ATOL)
        used_stored += len(ages)
        assert float(metrics["state/staleness"]) == pytest.approx(
            np.mean(ages) if ages else 0.0)
        for i, chunk in enumerate(batch["chunk"].numpy()):
            latest[chunk], written[chunk] = rows(kept, i), step
    assert used_stored > 20  # the order was shuffled, chunks were revisited
    # The table holds every visited chunk's latest final state.
    chunks = sorted(latest)
    table = t.policy.table.gather(chunks)
    np.testing.assert_allclose(
        table[0].h, np.concatenate([latest[c][0].h for c in chunks]),
        atol=ATOL)
    assert int(t.policy.table.written[chunks[0]]) == written[chunks[0]]
    # TensorBoard: the window means of state/staleness, and the mode.
    acc = EventAccumulator(str(tmp_path / "run" / "train"),
                           size_guidance={"tensors": 0})
    acc.Reload()
    logged = [float(tf.make_ndarray(e.tensor_proto))
              for e in acc.Tensors("state/staleness")]
    assert logged[-1] == pytest.approx(np.mean(
        [float(out[0]["state/staleness"]) for _, _, out in log[-5:]]))
    assert '"state_mode": "stored"' in str(
        tf.make_ndarray(acc.Tensors("config")[0].tensor_proto))


def test_stored_in_stream_order_equals_carry(tmp_path, short_sine):
    results = {}
    for mode in ("carry", "stored"):
        t = trainer.Trainer(config(tmp_path, mode, state_mode=mode,
                                   train_steps=30), out=io.StringIO())
        if mode == "stored":  # 12 chunks per lane: the order wraps twice
            t.iterator = iter(t.policy.dataset(t.task, t.arrays,
                                               shuffle=False))
        results[mode] = (t.run()["losses"], t.model.get_weights())
    (carry_losses, carry_w), (stored_losses, stored_w) = (
        results["carry"], results["stored"])
    np.testing.assert_allclose(stored_losses, carry_losses, atol=ATOL)
    for a, b in zip(stored_w, carry_w):
        np.testing.assert_allclose(a, b, atol=ATOL)


# ------------------------------------------------------------- burn-in
def hand_arrays():
    """2 lanes of 24 steps; streams start at 0, 10, 13 (lane 0) and 0, 16
    (lane 1), so chunk starts and burn-in windows meet stream starts."""
    rng = np.random.default_rng(7)
    inputs = rng.standard_normal((2, 24, 1)).astype(np.float32)
    targets = rng.standard_normal((2, 24, 1)).astype(np.float32)
    resets = np.zeros((2, 24), bool)
    resets[0, [0, 10, 13]] = True
    resets[1, [0, 16]] = True
    return data.StreamArrays(inputs, targets, resets,
                             np.ones((2, 24), np.float32))


TASK = data.SineTask()   # one value per step, as it is
SEQ, BURN = 4, 6


def burn_in_setup(mode="reset", arrays=None, burn_in=BURN):
    arrays = arrays or hand_arrays()
    cfg = TrainConfig(model=ModelConfig(units=8),
                      data=DataConfig(seq_len=SEQ, batch_size=2),
                      state_mode=mode, burn_in=burn_in)
    policy = policy_lib.StatePolicy(cfg, arrays)
    model = build_model(cfg, TASK)
    batches = list(policy.dataset(TASK, arrays, shuffle=False).take(6))
    return policy, model, arrays, batches


def loss_and_grads(model, policy, batch, state):
    with tf.GradientTape() as tape:
        tape.watch(batch["burn_in_inputs"])
        outputs, _ = policy.forward(model, batch, state)
        loss = losses.batch_sums(TASK, outputs, batch["targets"],
                                 batch["weights"])["loss"]
    variables = model.trainable_variables + [batch["burn_in_inputs"]]
    return loss, tape.gradient(loss, variables)


def test_burn_in_is_the_streams_previous_steps_run_by_hand():
    policy, model, a, batches = burn_in_setup()
    for k, batch in enumerate(batches):
        start = model.initial_state(2)
        loss, grads = loss_and_grads(model, policy, batch, start)
        assert grads[-1] is None  # no gradient reaches the burn-in inputs
        with tf.GradientTape() as tape:
            total = 0.0
            for lane in range(2):
                first = k * SEQ
                # By hand: from the initial state, the steps of this stream
                # in the N before the chunk (none when the chunk starts one).
                begin = max(0, first - BURN)
                starts = [s for s in range(begin, first + 1)
                          if a.resets[lane, s]]
                begin = max([begin] + starts)
                state = model.initial_state(1)
                if begin < first:
                    _, state = model(a.inputs[lane:lane + 1, begin:first])
                state = tuple(LSTMState(tf.stop_gradient(s.h),
                                        tf.stop_gradient(s.c)) for s in state)
                out, _ = model(a.inputs[lane:lane + 1, first:first + SEQ],
                               initial_state=state, reset_mask=a.resets[
                                   lane:lane + 1, first:first + SEQ])
                total += tf.reduce_sum(
                    (out - a.targets[lane:lane + 1, first:first + SEQ]) ** 2)
            want = total  # batch_sums: a sum over the batch
        np.testing.assert_allclose(loss, want, atol=ATOL)
        for got, exp in zip(grads, tape.gradient(
                want, model.trainable_variables)):
            np.testing.assert_allclose(got, exp, atol=ATOL)


def test_burn_in_targets_and_earlier_streams_change_nothing():
    policy, model, a, batches = burn_in_setup()
    changed = hand_arrays()
    k = 4  # chunk 4 (steps 16-19): lane 0's window reaches step 10's start,
    # lane 1 starts a stream at 16 (its whole burn-in is another stream).
    changed.targets[:, k * SEQ - BURN:k * SEQ] += 5.0
    changed.inputs[0, :13] += 3.0
    changed.inputs[1, :16] += 3.0
    other = list(policy.dataset(TASK, changed, shuffle=False).take(6))
    start = model.initial_state(2)
    loss, grads = loss_and_grads(model, policy, batches[k], start)
    loss2, grads2 = loss_and_grads(model, policy, other[k], start)
    assert np.asarray(batches[k]["stream_start"]).all()
    np.testing.assert_array_equal(loss, loss2)
    for g, g2 in zip(grads[:-1], grads2[:-1]):
        np.testing.assert_array_equal(g, g2)


def test_stored_burn_in_keeps_the_state_where_the_successor_starts():
    """With a burn-in, the kept state is the one at the successor's window
    start: the stream's state N steps before this chunk's end."""
    for burn in (2, 4, 6):
        policy, model, a, batches = burn_in_setup("stored", burn_in=burn)
        k = 5  # steps 20-23 of lane 1 (one stream since 16)
        _, kept = policy.forward(model, batches[k], model.initial_state(2))
        begin = max(16, k * SEQ - burn)
        _, want = model(a.inputs[1:2, begin:(k + 1) * SEQ - burn])
        np.testing.assert_allclose(kept[0].h[1:], want[0].h, atol=ATOL)


# ---------------------------------------------------------------- errors
def test_invalid_combinations_are_clear_errors(tmp_path, short_sine):
    from lstm_ctl import config as config_lib
    with pytest.raises(ValueError, match="--burn_in needs --state_mode=reset or "
                                         "stored"):
        config_lib.validate(config(tmp_path, state_mode="carry", burn_in=3))
    with pytest.raises(ValueError, match="burn_in must be >= 0"):
        config_lib.validate(config(tmp_path, burn_in=-1))
    with pytest.raises(ValueError, match=r"--burn_in=45 is longer than the "
                                         r"44 steps"):
        trainer.Trainer(config(tmp_path, burn_in=45), out=io.StringIO())
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------ train.py, resume
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args, message", [
    (["--burn_in=3"], "--burn_in needs --state_mode=reset or stored"),
    (["--state_mode=stored", "--burn_in=-2"], "--burn_in must be >= 0"),
    (["--state_mode=stored", "--burn_in=4000", "--seq_len=10",
      "--batch_size=2", "--units=8"],
     "train.py: error: --burn_in=4000 is longer than the 1780 steps that "
     "precede the last chunk of a stream lane"),
])
def test_train_py_refuses_invalid_burn_in(tmp_path, monkeypatch, args,
                                          message):
    corpus = tmp_path / "t.txt"
    corpus.write_text("abcdefgh" * 500)
    model_dir = tmp_path / "never"
    result = run_main("train.py", f"--model_dir={model_dir}", "--task=text",
                      f"--text_file={corpus}", *args)
    err = result.stderr
    assert result.returncode == 1, err
    assert message in err and "Traceback" not in err, err
    assert not model_dir.exists()
