"""Training an ensemble (`--ensemble=K`): K runs of the same settings, one
after another, member k with seed `--seed + k` in `<model_dir>/member-<k>`
(layout: config/ensemble.py). Each member trains, checkpoints, validates and
resumes as a run of its own; running the same command again resumes the
first member that has not finished. Once all are, the ensemble's dir gets
their merged model (run/merged.py): the members side by side in one model,
whose output is the average of theirs, evaluated and served as one run."""

import dataclasses
import os
import sys

from lstm_ctl import config as config_lib
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
    if not os.path.exists(config_lib.config_path(config.model_dir)):
        # What a resumed run takes for the settings chosen from the data;
        # the merged model's config.json replaces it.
        config_lib.save(config_lib.with_absolute_paths(config),
                        config.model_dir)
    results = []
    for k, member in enumerate(member_configs(config)):
        print(f"Member {k + 1}/{config.ensemble} (seed {member.seed}): "
              f"{member.model_dir}", file=out, flush=True)
        run = trainer.Trainer(member, out=out)
        results.append(run.run())
        if results[-1]["interrupted"] is not None:
            return dict(results[-1], members=results)
    if not run.chief:   # another worker of the same runs writes it
        return dict(results[-1], members=results, merged=None)
    from lstm_ctl.run import merged
    path = merged.write(config.model_dir,
                        [m.model_dir for m in member_configs(config)],
                        warn=lambda line: print(line, file=sys.stderr))
    print(f"Ensemble of {config.ensemble} trained: {path} holds the "
          "members side by side, one model whose output is the average of "
          f"theirs (evaluate.py and serve.py --model_dir={config.model_dir}).",
          file=out, flush=True)
    return dict(results[-1], members=results, merged=path)
