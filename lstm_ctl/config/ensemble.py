"""An ensemble run's layout (`train.py --ensemble=K`): K complete runs,
`<model_dir>/member-<k>` trained with seeds `--seed + k`, listed in
`<model_dir>/ensemble.json`, and beside them, once they are trained, the
ensemble as one run: `config.json` (`ensemble=K`), the task files and a
checkpoint of the members side by side (run/merged.py). Each member is a
run like any other; so is the ensemble's dir, for evaluate.py (which also
scores each member) and serve.py. No TensorFlow here.
"""

import json
import os

from lstm_ctl import files

MEMBERS_FILE = "ensemble.json"


def member_dir(model_dir, k):
    return os.path.join(model_dir, f"member-{k}")


def members(model_dir):
    """The member dirs of the ensemble at `model_dir`, or None when it is
    not one."""
    path = os.path.join(model_dir, MEMBERS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        names = json.load(f)["members"]
    return [os.path.join(model_dir, name) for name in names]


def write(model_dir, size, seed):
    """Lists the `size` members (seeds `seed`, `seed + 1`, ...)."""
    return files.write_json(os.path.join(model_dir, MEMBERS_FILE), {
        "members": [os.path.basename(member_dir(model_dir, k))
                    for k in range(size)],
        "seeds": [seed + k for k in range(size)]}, indent=2)


def recorded_dir(model_dir):
    """Where a run's recorded settings are: `model_dir`, or for an
    ensemble interrupted before it wrote its own config.json, its first
    member."""
    found = members(model_dir)
    if found and not os.path.exists(os.path.join(model_dir, "config.json")):
        return found[0]
    return model_dir


def unmerged(model_dir):
    """What stops the ensemble at `model_dir` being used as one model: ""
    once its merged model is written (train.py writes it when every member
    is trained), else a sentence that names a member to use alone."""
    found = members(model_dir)
    if not found or os.path.exists(os.path.join(model_dir, "checkpoint")):
        return ""
    return (f"{model_dir!r} is an ensemble of {len(found)} runs whose merged "
            "model is not written yet (train.py writes it once every member "
            "is trained; the same command resumes); a trained member is a "
            f"run of its own: --model_dir={found[0]}")


def check(model_dir, size):
    """Refuses to mix layouts in one dir: a single run trained again with
    --ensemble, an ensemble with another size or without --ensemble."""
    found = members(model_dir)
    single = found is None and os.path.exists(
        os.path.join(model_dir, "config.json"))
    if size > 1 and single:
        raise ValueError(
            f"--ensemble={size}: {model_dir!r} holds a single run "
            "(config.json); use another --model_dir for the ensemble.")
    if found is not None and len(found) != size:
        raise ValueError(
            f"{model_dir!r} holds an ensemble of {len(found)} members "
            f"({MEMBERS_FILE}); resume it with --ensemble={len(found)} or "
            "use another --model_dir.")
