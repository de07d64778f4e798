"""Training an ensemble (`--ensemble=K`): K runs of the same settings, one
after another, member k with seed `--seed + k` in `<model_dir>/member-<k>`
(layout: config/ensemble.py). Each member trains, checkpoints, validates and
resumes as a run of its own; running the same command again resumes the
first member that has not finished. Averaging their forecasts is
evaluate.py's (eval/ensemble.py)."""

import dataclasses
import os
import sys

from lstm_ctl.config import ensemble as layout


def member_configs(config):
    """The config of each member: its own dir and seed, one model."""
    return [dataclasses.replace(
        config, model_dir=layout.member_dir(config.model_dir, k), ensemble=1,
        data=dataclasses.replace(config.data, seed=config.seed + k))
        for k in range(config.ensemble)]


def train(config, out=None):
    """Trains (or resumes) every member in turn; stops at an interrupted
    one. Returns the last member's result, with `members` (every result so
    far)."""
    from lstm_ctl.train import trainer
    out = out or sys.stdout
    layout.check(config.model_dir, config.ensemble)
    os.makedirs(config.model_dir, exist_ok=True)
    layout.write(config.model_dir, config.ensemble, config.seed)
    results = []
    for k, member in enumerate(member_configs(config)):
        print(f"Member {k + 1}/{config.ensemble} (seed {member.seed}): "
              f"{member.model_dir}", file=out, flush=True)
        results.append(trainer.Trainer(member, out=out).run())
        if results[-1]["interrupted"] is not None:
            return dict(results[-1], members=results)
    print(f"Ensemble of {config.ensemble} trained: evaluate.py "
          f"--model_dir={config.model_dir} averages their predictions.",
          file=out, flush=True)
    return dict(results[-1], members=results)
