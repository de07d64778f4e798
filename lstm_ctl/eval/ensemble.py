"""Evaluating an ensemble run (`train.py --ensemble=K`, layout in
config/ensemble.py): each member is evaluated at its own checkpoint as a run
of its own (its rows, its TensorBoard points), then the ensemble: the
members side by side in one model (core/side_by_side.py; the
ensemble's dir holds it too, run/merged.py), whose one-step output is
the average of theirs and whose forecast feeds that average back to every
member. Its rows are named `ensemble of K`, its TensorBoard points go to
`<model_dir>/eval`, and it is the model `--export_dir` exports and
`serve.py` serves.
"""

from lstm_ctl.eval import engine
from lstm_ctl.run import checkpoints
from lstm_ctl.config import ensemble as layout
from lstm_ctl.core import side_by_side


class Ensemble(engine.Evaluator):
    """Evaluates the ensemble at `model_dir` whose members are
    `member_dirs` (the arguments after them as `engine.Evaluator`'s)."""

    def __init__(self, model_dir, member_dirs, warmup=None, horizon=0,
                 data_file=None):
        problem = layout.unmerged(model_dir)
        if problem:
            raise FileNotFoundError(problem)
        super().__init__(model_dir, warmup, horizon, data_file)
        self.members = [engine.Evaluator(d, warmup, horizon, data_file)
                        for d in member_dirs]
        self.checkpoints = []

    @property
    def trace_count(self):
        return self.forecaster.trace_count + sum(m.trace_count
                                                 for m in self.members)

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
        then the rows `ensemble of K` of the members side by side, at the
        latest member's step. The warnings are the ensemble's (its numbers
        are the result)."""
        rows, steps = [], []
        self.checkpoints = []
        for member in self.members:
            path = self.member_checkpoint(member, checkpoint, warn)
            rows += member.evaluate_checkpoint(path, state_mode, eval_steps,
                                               restore=False)
            self.checkpoints.append(path)
            steps.append(checkpoints.checkpoint_step(path))
        side_by_side.merge([m.model for m in self.members], self.model)
        rows += self.evaluate_checkpoint(
            f"ensemble of {len(self.members)}", state_mode, eval_steps,
            restore=False, step=max(steps))
        return rows

    def close(self):
        for m in self.members:
            m.close()
        super().close()
