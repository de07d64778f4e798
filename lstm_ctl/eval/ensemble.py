"""Evaluating an ensemble run (`train.py --ensemble=K`, layout in
config/ensemble.py): each member is evaluated at its own checkpoint as a run
of its own (its rows, its TensorBoard points), then the ensemble is scored
on the average of the members' predictions: the one-step hold-out
predictions, the hold-out forecasts and the future forecast, every number
a user sees. Its rows are named `ensemble of K` and its TensorBoard points
go to `<model_dir>/eval`.
"""

import numpy as np

from lstm_ctl.eval import engine
from lstm_ctl.eval.forecast import Backtest
from lstm_ctl.run import checkpoints


def mean_outputs(outputs):
    """The average of the members' `engine.Outputs` (the warm state:
    None, as it is a member's own)."""
    def mean(arrays):
        return np.mean(np.stack(arrays), 0)

    carry = [mean(parts) for parts in zip(*(o.carry for o in outputs))]
    reset = [mean(parts) for parts in zip(*(o.reset for o in outputs))]
    backtest = None
    if outputs[0].backtest is not None:
        first = outputs[0].backtest
        backtest = Backtest({name: mean([o.backtest.paths[name]
                                         for o in outputs])
                             for name in first.paths},
                            first.actual, first.weights, first.n)
    return engine.Outputs(carry, reset, None, backtest)


class Ensemble(engine.Evaluator):
    """Evaluates the ensemble at `model_dir` whose members are
    `member_dirs` (the arguments after them as `engine.Evaluator`'s). It
    evaluates on the first member's data; every member was trained on the
    same."""

    def __init__(self, model_dir, member_dirs, warmup=None, horizon=0,
                 data_file=None):
        self.members = [engine.Evaluator(d, warmup, horizon, data_file)
                        for d in member_dirs]
        first = self.members[0]
        if not first.task.numeric:
            raise ValueError(f"{model_dir!r}: an ensemble averages numeric "
                             f"predictions; its task is {first.task.name!r}.")
        self.model_dir, self.horizon = model_dir, horizon
        self.config, self.task, self.series = (first.config, first.task,
                                               first.series)
        self.warmup, self.forecaster = first.warmup, first.forecaster
        self.model = None
        self.state_horizon = first.state_horizon
        self.last, self.warnings, self._writers = None, [], {}
        self.checkpoints = []

    @property
    def trace_count(self):
        return sum(m.trace_count for m in self.members)

    def member_checkpoint(self, member, checkpoint=None, warn=print):
        """Restores `member` at `checkpoint` ("best", "latest", or None: the
        one `restore_default` picks); returns its path."""
        if not checkpoint:
            return member.restore_default(warn)
        path = checkpoints.require_checkpoint(member.model_dir, checkpoint)
        member.restore(path)
        return path

    def evaluate_members(self, checkpoint=None, state_mode="both",
                         eval_steps=0, warn=print):
        """Rows of each member at its checkpoint (see `member_checkpoint`),
        then the rows `ensemble of K` of their averaged outputs, at the
        latest member's step. The warnings are the ensemble's (its numbers
        are the result)."""
        rows, outputs, steps = [], [], []
        self.checkpoints = []
        for member in self.members:
            path = self.member_checkpoint(member, checkpoint, warn)
            step = checkpoints.checkpoint_step(path)
            out = member.outputs(eval_steps)
            rows += member.report(path, step, out, state_mode, eval_steps)
            self.checkpoints.append(path)
            outputs.append(out)
            steps.append(step)
        rows += self.report(f"ensemble of {len(self.members)}", max(steps),
                            mean_outputs(outputs), state_mode, eval_steps)
        return rows

    def future_forecast(self):
        """The average of the members' future forecasts (each at the
        checkpoint `evaluate_members` restored)."""
        return np.mean(np.stack([m.future_forecast()
                                 for m in self.members]), 0)

    def close(self):
        for m in self.members:
            m.close()
        super().close()
