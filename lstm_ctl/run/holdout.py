"""Scoring the hold-out of a run's streams: the warm-up over the history, the
one-step predictions with the state carried or reset, the naive baseline,
the horizon over which training carried the state, and the warnings when a
number should not be trusted.

Evaluation (`eval/`) and validation during training (`train/`) both score
with this module, so the number that picks the best checkpoint is the number
`evaluate.py` reports, and neither package imports the other.

Next-step pairs are inputs[t] -> targets[t + 1]. A stream's history is rows
[0, cut). Warming up runs the model, unscored, over the pairs whose target is
a history row (inputs [0, cut - 1); with `warmup=N` only the last N of them);
the hold-out steps are the pairs whose target is a hold-out row (inputs
[cut - 1, L - 1) -> targets [cut, L)), so every hold-out row is predicted
once, the first one from the state that the warm-up left.
"""

import json
import os

import numpy as np
import tensorflow as tf

from lstm_ctl.data import losses
from lstm_ctl.data import transforms
from lstm_ctl.run.builders import batch_signature

WARMUP_CHUNK = 4096     # steps per call when warming up (bounds memory)
RUN_FILE = "run.json"   # what training learned about the run: the horizon
SCORED_MODES = ("carry", "reset", "naive")


def _pad(parts, dtype):
    """`[T_i, ...]` arrays -> (`[B, T, ...]` zero-padded, mask `[B, T]`)."""
    steps = max([len(p) for p in parts] + [1])
    shape = (len(parts), steps) + np.asarray(parts[0]).shape[1:]
    values, mask = np.zeros(shape, dtype), np.zeros(shape[:2], bool)
    for i, p in enumerate(parts):
        values[i, :len(p)] = p
        mask[i, :len(p)] = True
    return values, mask


def spans(series, max_steps=0):
    """`(a, b)` per stream: the hold-out steps predict rows [a, b)."""
    out = []
    for s in series:
        a = max(s.cut, 1)
        b = len(s.targets) if not max_steps else min(len(s.targets),
                                                     a + max_steps)
        out.append((a, b))
    return out


def parse_warmup(value):
    """`"history"`, `"none"` or a number of rows N (`"50"` -> 50), checked;
    None stays None (the task's default)."""
    if value is None or value in ("history", "none"):
        return value
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 1 or str(value).strip() != str(n):
        raise ValueError(f"--warmup must be history, none or a number of "
                         f"rows >= 1; got {value!r}")
    return n


def warmup_name(warmup):
    """A short name of a warm-up setting: history, none, last50."""
    return f"last{warmup}" if isinstance(warmup, int) else warmup


def warmup_ranges(series, warmup="history"):
    """`(start, end)` per stream: the warm-up runs over inputs [start, end),
    the whole history or (`warmup=N`) its last N pairs."""
    out = []
    for a, _ in spans(series):
        end = a - 1
        start = 0 if warmup == "history" else max(0, end - int(warmup))
        out.append((start, end))
    return out


def naive_outputs(task, series, max_steps=0):
    """The naive model's outputs on the hold-out steps, one `[n_i, O]` per
    stream, scored like the model's: repeat-last-value (the last observed
    target; sine, csv; of a changes run: no change) or the unigram
    distribution of the history (logits; text): `task.naive_outputs`."""
    return task.naive_outputs(series, spans(series, max_steps))


def forecast_mode(state_mode):
    """The start state a run's forecasts come from: "carry" (the state of
    the whole history; carry and stored training) or "reset" (the initial
    state warmed up over the last `seq_len` rows; reset and windows)."""
    return "reset" if state_mode in ("reset", "windows") else "carry"


class Runner:
    """Runs one model over `data.Series` streams, one lane per stream.

    The forward pass is one compiled function (`[B, T, D]` inputs, batch
    and time `None`), traced once (`trace_count`) for every warm-up,
    hold-out run and checkpoint.
    """

    def __init__(self, model, task, seq_len):
        self.model, self.task, self.seq_len = model, task, seq_len
        self._step = None
        self._forward = None
        self.trace_count = 0

    def forward(self, x, state, mask):
        """`model(x, initial_state=state, mask=mask)`, compiled: `(outputs
        [B, T, O], final state)`."""
        if self._forward is None:
            batch_spec, state_spec = batch_signature(self.task, self.model)
            mask_spec = tf.TensorSpec([None, None], tf.bool)

            def forward_fn(x, state, mask):
                self.trace_count += 1
                return self.model(x, initial_state=state, mask=mask)

            self._forward = tf.function(
                forward_fn, autograph=False, input_signature=[
                    batch_spec["inputs"], state_spec, mask_spec])
        return self._forward(x, state, mask)

    def rollout(self, state, x_last, horizon):
        """`[B, horizon, O]` normalised (text: logits): `model.step` on the
        inputs `x_last` (`[B, D]`, or `[B]` ids) from `state`, then on each
        of its own predictions."""
        if self._step is None:
            _, state_spec = batch_signature(self.task, self.model)
            self._step = tf.function(self.model.step, input_signature=[
                tf.TensorSpec([None, self.task.input_dim], tf.float32),
                state_spec])
        feed = self.task.feedback()
        x, ys = self._features(np.asarray(x_last)), []
        for _ in range(horizon):
            y, state = self._step(x, state)
            ys.append(np.asarray(y))
            x = feed(y)
        return np.stack(ys, 1)

    def backtest(self, series, horizon, warm_state=None,
                 modes=("carry", "reset", "naive")):
        """Forecasts of the first `horizon` hold-out rows of each stream from
        the end of its history, using only rows before the hold-out:
        `(paths, actual, weights, n)`. `paths`: `{"carry", "reset",
        "naive"}` -> `[B, horizon, O]` normalised; carry: from the state of
        the whole history (or `warm_state`); reset: from the initial state
        warmed up over only the last `seq_len` history rows; naive: the last
        history value repeated (a changes run: no change). `actual`
        `[sum n, O]` and `weights` are the `n[i] = min(horizon, hold-out
        rows)` rows forecast, concatenated. `modes`: the paths to compute.
        """
        sp = spans(series)
        x_last = np.stack([s.inputs[a - 1] for s, (a, _) in zip(series, sp)])
        paths = {}
        if "carry" in modes:
            if warm_state is None:
                warm_state = self.warm_up(series)
            paths["carry"] = self.rollout(warm_state, x_last, horizon)
        if "reset" in modes:
            _, short = self.run([s.inputs[max(a - self.seq_len, 0):a - 1]
                                 for s, (a, _) in zip(series, sp)])
            paths["reset"] = self.rollout(short, x_last, horizon)
        if "naive" in modes:
            paths["naive"] = np.stack([
                np.repeat(self.task.naive_after(s)[a - 1][None], horizon, 0)
                for s, (a, _) in zip(series, sp)])
        n = [min(horizon, b - a) for a, b in sp]
        actual = np.concatenate([s.targets[a:a + k]
                                 for s, (a, _), k in zip(series, sp, n)])
        weights = np.concatenate([s.weights[a:a + k]
                                  for s, (a, _), k in zip(series, sp, n)])
        return paths, actual, weights, n

    def backtest_levels(self, series, horizon, warm_state=None,
                        modes=("carry", "reset", "naive")):
        """`backtest` in data units: the paths and `actual` as levels (a
        changes run's forecast summed onto the last history level)."""
        paths, _, weights, n = self.backtest(series, horizon, warm_state,
                                             modes)
        starts = [a for a, _ in spans(series)]
        paths = {k: transforms.path_levels(self.task, series, v, starts)
                 for k, v in paths.items()}
        actual = np.concatenate([
            transforms.actual_levels(self.task, s, a, a + k)
            for s, a, k in zip(series, starts, n)])
        return paths, actual, weights, n

    def forecast_scores(self, series, horizon, modes):
        """`{mode: {"loss", "rmse"}}`: the backtests of `modes` over the
        first `horizon` hold-out rows, their error in data units divided by
        the targets' normalisation std (loss is the MSE; a changes run's
        forecast summed back onto levels, then divided by the changes'
        std)."""
        paths, actual, weights, n = self.backtest_levels(series, horizon,
                                                         modes=modes)
        norm = self.task.norm
        std = (1.0 if norm is None else
               np.array(norm["std"])[norm["targets"]])
        out = {}
        for mode in modes:
            pred = np.concatenate([paths[mode][i, :k]
                                   for i, k in enumerate(n)])
            err = (((pred - actual) / std) ** 2).mean(-1)
            mse = float((err * weights).sum() / max(weights.sum(), 1e-12))
            out[mode] = {"loss": mse, "rmse": float(np.sqrt(mse))}
        return out

    def _features(self, x):
        return self.task.model_inputs(x)

    def run(self, parts, state=None, chunk=0):
        """The model over `parts` (inputs `[T_i, ...]`, one lane each) from
        `state` (None: the initial state): (outputs list, final state)."""
        x, mask = _pad(parts, self.task.lane_dtype)
        if state is None:
            state = self.model.initial_state(len(parts))
        chunk = chunk or x.shape[1]
        outs = []
        for k in range(0, x.shape[1], chunk):
            out, state = self.forward(self._features(x[:, k:k + chunk]),
                                      state, mask[:, k:k + chunk])
            outs.append(np.asarray(out))
        out = np.concatenate(outs, 1)
        return [out[i, :len(p)] for i, p in enumerate(parts)], state

    def warm_up(self, series, ends=None, warmup="history"):
        """The state after each stream's warm-up, `[B, units]` per layer:
        the model, unscored, over inputs [start, end) (default: the whole
        history; `warmup=N`: its last N pairs; `ends` given: [0, end))."""
        if ends is not None:
            ranges = [(0, e) for e in ends]
        else:
            ranges = warmup_ranges(series, warmup)
        _, state = self.run([s.inputs[a:b] for s, (a, b) in
                             zip(series, ranges)], chunk=WARMUP_CHUNK)
        return state

    def predict(self, series, warm_state=None, max_steps=0):
        """One-step predictions of the hold-out steps (outputs: normalised
        values or logits), `(carry, reset)`, each a list of `[n_i, O]`.

        carry: from `warm_state` (None: the initial state) over the whole
        hold-out; reset: every chunk of `seq_len` steps from the initial
        state.
        """
        sp = spans(series, max_steps)
        carry, _ = self.run([s.inputs[a - 1:b - 1]
                             for s, (a, b) in zip(series, sp)], warm_state)
        pieces, owners = [], []
        for i, (s, (a, b)) in enumerate(zip(series, sp)):
            for k in range(a - 1, b - 1, self.seq_len):
                pieces.append(s.inputs[k:min(k + self.seq_len, b - 1)])
                owners.append(i)
        outs, _ = self.run(pieces)
        by_stream = [[] for _ in series]
        for out, i in zip(outs, owners):
            by_stream[i].append(out)
        reset = [np.concatenate(p) if p else c[:0]
                 for p, c in zip(by_stream, carry)]
        return carry, reset

    def score(self, series, outputs, max_steps=0):
        """`{"loss", <metric>}` of hold-out predictions, as `losses` does."""
        totals = {"loss": 0.0, "metric": 0.0, "count": 0.0}
        for s, (a, b), out in zip(series, spans(series, max_steps), outputs):
            sums = losses.batch_sums(self.task, tf.constant(out[None]),
                                     s.targets[None, a:b],
                                     s.weights[None, a:b])
            for k in totals:
                totals[k] += float(sums[k])
        return losses.finalize(self.task, totals)

    def scores(self, series, warmup="history", max_steps=0):
        """`(scores, predictions)`: `{"carry"|"reset"|"naive": {"loss",
        <metric>}}` on the hold-out, and `(carry, reset, warm state)`.
        `warmup`: "history", "none" (carry from the initial state) or N."""
        warm = None if warmup == "none" else self.warm_up(series,
                                                          warmup=warmup)
        carry, reset = self.predict(series, warm, max_steps)
        naive = naive_outputs(self.task, series, max_steps)
        out = {name: self.score(series, outputs, max_steps)
               for name, outputs in (("carry", carry), ("reset", reset),
                                     ("naive", naive))}
        return out, (carry, reset, warm)


# ------------------------------------------------------------ the horizon
def longest_stretch(resets):
    """The most consecutive steps of a lane without a reset, `[B, N]`."""
    best = 0
    for lane in np.asarray(resets, bool):
        starts = np.flatnonzero(lane)
        bounds = np.concatenate([[0], starts, [len(lane)]])
        best = max(best, int(np.diff(bounds).max(initial=0)))
    return best


def state_horizon(arrays, seq_len, state_mode, burn_in=0, reset_every=0):
    """The most steps over which training carried a state before a trained
    step: in carry and stored mode, the longest stretch of a lane without a
    reset (within the chunks trained on; `reset_every` caps it); in reset
    mode, one chunk and its burn-in; in windows mode, one window."""
    if state_mode == "windows":
        return seq_len
    if state_mode == "reset":
        return seq_len + burn_in
    used = (arrays.steps // seq_len) * seq_len
    horizon = longest_stretch(arrays.resets[:, :used]) + burn_in
    if state_mode == "carry" and reset_every:
        horizon = min(horizon, reset_every * seq_len)
    return horizon


def save_run_info(model_dir, **values):
    """Merges `values` into `<model_dir>/run.json` (atomically)."""
    path = os.path.join(model_dir, RUN_FILE)
    info = load_run_info(model_dir)
    info.update(values)
    os.makedirs(model_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def load_run_info(model_dir):
    path = os.path.join(model_dir, RUN_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError:
            return {}


# ------------------------------------------------------------ warnings
def warnings(scores, baseline_name="naive", warmup_steps=None, horizon=None,
             warmup=None):
    """Lines saying why a number should not be trusted (empty when none):
    the warm-up is longer than any state was carried in training, carry is
    worse than reset, the model is worse than the naive baseline."""
    out = []
    if warmup_steps and horizon and warmup_steps > horizon:
        out.append(
            f"the warm-up runs the state over up to {warmup_steps} steps, but "
            f"training never carried a state over more than {horizon} steps: "
            "the carried state is out of what the model learned, so carry "
            f"numbers may not be trusted; compare --warmup={horizon}, or "
            "carry the state further in training (--state_mode=carry with "
            "fewer --batch_size lanes).")
    carry, reset, naive = (scores.get(k) for k in SCORED_MODES)
    if carry and reset and carry["loss"] > reset["loss"] * (1 + 1e-6):
        out.append(f"carry is worse than reset (loss {carry['loss']:.5g} vs "
                   f"{reset['loss']:.5g}): carrying the state hurts here.")
    if naive:
        worse = [f"{k} {scores[k]['loss']:.5g}" for k in ("carry", "reset")
                 if scores.get(k) and scores[k]["loss"] > naive["loss"]]
        if worse:
            out.append(f"the model is worse than the naive {baseline_name} "
                       f"baseline (loss {', '.join(worse)} vs naive "
                       f"{naive['loss']:.5g}).")
    return out
