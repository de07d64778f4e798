"""What evaluate.py is asked to do: `EvalConfig`, one field per flag."""

import dataclasses
import os
from typing import Optional

from lstm_ctl.config.fields import (
    AT_LEAST_0, POSITIVE, field_problems, setting)

EVAL_MODES = ("carry", "reset", "both")

def _warmup_ok(value):
    return value in (None, "history", "none") or (
        str(value).isdigit() and int(value) >= 1)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What evaluate.py is asked to do (each field is a flag); the run
    itself comes from `<model_dir>/config.json`."""
    model_dir: Optional[str] = setting(None, "A model dir written by "
                                       "train.py.")
    checkpoint: Optional[str] = setting(
        None, "Evaluate this checkpoint: a path, best (the best by "
        "validation, kept in <model_dir>/best) or latest. Default: best for "
        "a run validated on its history (--validate_on=history), else "
        "latest.")
    all: bool = setting(False, "Evaluate every checkpoint, oldest first, "
                        "writing eval summaries at each checkpoint's step.")
    watch: bool = setting(False, "Evaluate each new checkpoint as it "
                          "appears, until --watch_timeout seconds pass "
                          "without one.")
    watch_timeout: float = setting(600.0, "Seconds to wait for a new "
                                   "checkpoint in --watch mode.", AT_LEAST_0)
    state_mode: str = setting(
        "both", "carry: the state flows over each stream's whole hold-out; "
        "reset: it restarts at every chunk; both: side by side.",
        choices=EVAL_MODES)
    warmup: Optional[str] = setting(
        None, "history: each stream's hold-out starts from the state its "
        "history left (one lane per stream; sine: the first half of each "
        "eval signal); N: from the state of only its last N history rows; "
        "none: from the initial state (the same streams and hold-outs). "
        "Default: history, as validation scores the best checkpoint.",
        (_warmup_ok, "history, none or a number of rows >= 1"))
    eval_steps: int = setting(
        0, "Score the first N x --seq_len hold-out steps of each stream "
        "(0: all).", AT_LEAST_0)
    predictions_csv: Optional[str] = setting(
        None, "Write the one-step predictions of the hold-out here (data "
        "units).")
    forecast: int = setting(
        0, "Forecast H steps, feeding each prediction back (needs every "
        "input column to be a target): reports the RMSE of the hold-out "
        "forecast (holdout_forecast_*: the first H hold-out rows forecast "
        "from the end of the history; sine, csv); --forecast_csv writes the "
        "future forecast.", AT_LEAST_0)
    forecast_csv: Optional[str] = setting(
        None, "Write the future forecast here: the --forecast steps after "
        "each whole series (history and hold-out), data units, with their "
        "times when the time column steps regularly.")
    plot: Optional[str] = setting(None, "Also write the predictions figure "
                                  "to this PNG file.")
    output_json: Optional[str] = setting(None, "Also write the rows and the "
                                         "warnings here.")
    sample: int = setting(0, "Text task: generate this many characters with "
                          "model.step.", AT_LEAST_0)
    prime: str = setting("\n", "Text task: the text to start sampling from.")
    temperature: float = setting(1.0, "Sampling temperature (> 0).", POSITIVE)
    seed: Optional[int] = setting(None, "Seed of --sample (default: the "
                                  "run's seed, so the same call gives the "
                                  "same text).")
    export_dir: Optional[str] = setting(
        None, "Export the evaluated checkpoint as a SavedModel (serve, step, "
        "initial_state) plus step.tflite here.")
    csv_file: Optional[str] = setting(
        None, "Evaluate a csv run on this file (a file, a directory or a "
        "glob) with the columns it was trained on, instead of its own.")
    text_file: Optional[str] = setting(
        None, "Evaluate a text run on this file (a file, a directory or a "
        "glob) instead of its own.")


def eval_problems(e):
    """Every problem of an EvalConfig that needs no file, one message each
    (empty when it is fine)."""
    out = field_problems(e)
    if not e.model_dir:
        out.insert(0, "--model_dir is required")
    if sum([bool(e.all), bool(e.watch), bool(e.checkpoint)]) > 1:
        out.append("--all, --watch and --checkpoint exclude each other")
    if e.forecast_csv and e.forecast <= 0:
        out.append("--forecast_csv needs --forecast=H (the number of steps, "
                   "> 0)")
    if e.sample and not e.prime:
        out.append("--prime must hold at least one character")
    if e.csv_file and e.text_file:
        out.append("--csv_file and --text_file exclude each other")
    for name in ("predictions_csv", "forecast_csv", "plot", "output_json"):
        path = getattr(e, name)
        if path and os.path.isdir(path):
            out.append(f"--{name}={path} is a directory; it takes a file "
                       "path")
    return out
