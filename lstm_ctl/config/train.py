"""What a training run is: `TrainConfig` (with its `model` and `data`
parts), the rules between its settings, and config.json. `TrainConfig` is
written to `<model_dir>/config.json`, so that evaluation and serving rebuild
the model and the data from it rather than from flags."""

import dataclasses
import json
import os
from typing import Optional, Tuple

from lstm_ctl.config.fields import (
    AT_LEAST_0, AT_LEAST_1, FRACTION, POSITIVE, field_problems, setting)

TASKS = ("sine", "text", "csv")
STATE_MODES = ("carry", "reset", "stored", "windows")
INITIAL_STATE_MODES = ("zeros", "learned")
LR_SCHEDULES = ("constant", "cosine")
STRATEGIES = ("default", "mirrored", "multi_worker")
MISSING_MODES = ("error", "ffill", "drop")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
VALIDATE_ON = ("holdout", "history")
# "auto": chosen from the data (lstm_ctl/config/defaults.py), as when the
# flag is not given; config.json records levels or changes.
TARGET_TRANSFORMS = ("levels", "changes", "auto")
CONFIG_FILE = "config.json"

@dataclasses.dataclass(frozen=True)
class ModelConfig:
    units: int = setting(128, "LSTM units per layer.", AT_LEAST_1)
    num_layers: int = setting(1, "Stacked LSTM layers.", AT_LEAST_1)
    dropout: float = setting(0.0, "Input dropout of each layer, in [0, 1).",
                             FRACTION)
    recurrent_dropout: float = setting(0.0, "Recurrent dropout, in [0, 1).",
                                       FRACTION)
    initial_state_mode: str = setting(
        "zeros", "zeros, or learned (trainable h0 and c0).",
        choices=INITIAL_STATE_MODES)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    task: str = setting("sine", "sine (built in), text (--text_file) or csv "
                        "(--csv_file).", choices=TASKS)
    seq_len: int = setting(20, "Timesteps per chunk (the truncated-BPTT "
                           "length).", AT_LEAST_1)
    batch_size: int = setting(32, "Parallel streams per batch.", AT_LEAST_1)
    seed: int = setting(0, "Seed of data, weights and dropout.")
    text_file: Optional[str] = setting(
        None, "--task=text: a UTF-8 text file, a directory or a glob; each "
        "file is one stream.")
    csv_file: Optional[str] = setting(
        None, "--task=csv: a CSV file with a header row, a directory or a "
        "glob (same header in every file).")
    target_columns: Tuple[str, ...] = setting((), "CSV columns to forecast.")
    # csv: () means every column other than the time and id columns;
    # config.json holds the resolved list (see with_input_columns).
    input_columns: Tuple[str, ...] = setting(
        (), "CSV input columns (default: every column other than "
        "--time_column and --id_column).")
    time_column: Optional[str] = setting(
        None, "CSV column that orders the rows: numbers, ISO "
        "dates/datetimes, quarters (1974Q1), months (1995-01) or dates like "
        "Jan-1-1995; never an input.")
    id_column: Optional[str] = setting(
        None, "CSV column naming the entity of a row; each entity is its own "
        "stream.")
    missing: str = setting(
        "error", "CSV missing cells: error; ffill (inputs from the last value "
        "of the stream, a missing target is not trained or scored); drop "
        "(drop rows with a missing cell).", choices=MISSING_MODES)
    target_transform: str = setting(
        "levels", "CSV: what the model forecasts: levels (the target values "
        "as they are) or changes (each row minus the row before; forecasts "
        "are summed back onto the last known value, so every output stays "
        "in data units); auto: chosen from the data.",
        choices=TARGET_TRANSFORMS)
    csv_delimiter: Optional[str] = setting(
        None, "CSV cell separator: ',', ';', 'tab' or another character "
        "(default: sniffed: ',', ';' or tab).",
        (lambda v: v is None or v in ("tab", "\\t") or (
            len(v) == 1 and v not in '"\r\n'),
         "one character (',', ';'), or 'tab'"))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str = setting("runs/default", "Checkpoints, config.json and "
                             "TensorBoard logs go here.")
    model: ModelConfig = setting(ModelConfig(), "", flag=False)
    data: DataConfig = setting(DataConfig(), "", flag=False)
    train_steps: int = setting(4000, "Total training steps.", AT_LEAST_1)
    learning_rate: float = setting(3e-3, "Adam learning rate.", POSITIVE)
    lr_schedule: str = setting("cosine", "constant, or cosine decay over "
                               "--train_steps.", choices=LR_SCHEDULES)
    clip_norm: float = setting(1.0, "Global gradient norm clipping; 0 turns "
                               "it off.", AT_LEAST_0)
    state_mode: str = setting(
        "carry", "carry: the state flows from batch to batch (truncated "
        "BPTT); reset: every shuffled chunk starts from the initial state; "
        "stored: from the state stored for it (the final state of the chunk "
        "before it, at its latest visit); windows: --batch_size windows of "
        "--seq_len rows from any start in any stream, each from the "
        "initial state.", choices=STATE_MODES)
    burn_in: int = setting(0, "With --state_mode=reset or stored: run each "
                           "chunk's N previous steps first, without loss or "
                           "gradient.", AT_LEAST_0)
    reset_every: int = setting(0, "With --state_mode=carry: restart the state "
                               "every N batches; 0: only where streams end.",
                               AT_LEAST_0)
    jit_compile: bool = setting(False, "Compile the train step with XLA.")
    precision: str = setting(
        "float32", "Dtype policy: float32, mixed_bfloat16 or mixed_float16 "
        "(compute in 16 bits; weights and state stay float32; mixed_float16 "
        "scales the loss).", choices=PRECISIONS)
    strategy: str = setting(
        "default", "default: one device; mirrored: MirroredStrategy over the "
        "local GPUs (or --cpu_replicas CPU devices); multi_worker: "
        "MultiWorkerMirroredStrategy configured by TF_CONFIG.",
        choices=STRATEGIES)
    cpu_replicas: int = setting(0, "With --strategy=mirrored: split the CPU "
                                "into N logical devices, one replica each "
                                "(0: use the GPUs).", AT_LEAST_0)
    deterministic: bool = setting(
        False, "Deterministic ops (tf.config.experimental."
        "enable_op_determinism): a run resumed after a crash ends with "
        "bit-identical weights.")
    skip_nonfinite: bool = setting(
        False, "Skip steps with a NaN or Inf loss (no update; counted in "
        "TensorBoard as nonfinite_steps) instead of stopping.")
    log_every: int = setting(100, "Steps between progress lines and scalar "
                             "summaries.", AT_LEAST_1)
    hist_every: int = setting(500, "Steps between histogram summaries.",
                              AT_LEAST_1)
    checkpoint_every: int = setting(500, "Steps between checkpoints.",
                                    AT_LEAST_1)
    max_to_keep: int = setting(10, "Checkpoints to keep.", AT_LEAST_1)
    eval_every: Optional[int] = setting(
        None, "Steps between validations (held-out carry, reset and naive "
        "scores; the best checkpoint goes to <model_dir>/best). Default: "
        "--checkpoint_every; 0: off.",
        (lambda v: v is None or v >= 0, ">= 0 (0 turns validation off)"))
    validate_on: str = setting(
        "holdout", "holdout: validation scores the hold-out, as evaluate.py "
        "does; history: the last 10% of each stream's history instead, which "
        "training then does not read, so the best checkpoint and early "
        "stopping never see the hold-out (text, csv).",
        choices=VALIDATE_ON)
    early_stopping: int = setting(
        0, "Stop after N validations without a lower held-out carry loss "
        "(0: never).", AT_LEAST_0)
    ensemble: int = setting(
        1, "Train N models, seeds --seed to --seed+N-1, in "
        "<model_dir>/member-<k>; <model_dir> then holds them side by side "
        "as one model whose output is the average of theirs, which "
        "evaluate.py (beside each member's rows) and serve.py take as any "
        "run (sine, csv).",
        AT_LEAST_1)

    # The settings train.py chose from the data (config.json records them).
    chosen_from_data: Tuple[str, ...] = setting((), "", flag=False)

    @property
    def seed(self):
        """The run's one seed (data, weights, dropout): `data.seed`."""
        return self.data.seed


# Rules between settings: (applies, holds, message or message(config)).
# Each names the flags.

RULES = (
    (lambda c: True,
     lambda c: c.burn_in == 0 or c.state_mode in ("reset", "stored"),
     lambda c: f"--burn_in needs --state_mode=reset or stored (got "
     f"--state_mode={c.state_mode}: "
     + ("in carry mode the state already comes from the stream's previous "
        "steps)" if c.state_mode == "carry" else
        "a window's first steps already run from the initial state)")),
    (lambda c: True,
     lambda c: c.reset_every == 0 or c.state_mode == "carry",
     "--reset_every needs --state_mode=carry (in reset, stored and windows "
     "modes every chunk already starts from the initial or its stored "
     "state)"),
    (lambda c: c.early_stopping > 0,
     lambda c: eval_every(c) > 0,
     "--early_stopping needs validation: --eval_every must not be 0"),
    (lambda c: True,
     lambda c: c.cpu_replicas == 0 or c.strategy == "mirrored",
     "--cpu_replicas needs --strategy=mirrored"),
    (lambda c: c.strategy == "mirrored" and c.cpu_replicas > 0,
     lambda c: c.data.batch_size % c.cpu_replicas == 0,
     lambda c: f"--batch_size={c.data.batch_size} (the global batch) is not "
     f"divisible by the {c.cpu_replicas} replicas (--cpu_replicas)"),
    (lambda c: c.ensemble > 1,
     lambda c: c.data.task != "text",
     "--ensemble averages numeric predictions (sine, csv); --task=text "
     "predicts characters"),
    (lambda c: c.data.task == "text",
     lambda c: bool(c.data.text_file),
     "--task=text needs --text_file=PATH (a UTF-8 text file)"),
    (lambda c: c.data.task == "csv",
     lambda c: bool(c.data.csv_file),
     "--task=csv needs --csv_file=PATH"),
    (lambda c: c.data.task == "csv",
     lambda c: bool(c.data.target_columns),
     "--task=csv needs --target_columns (comma-separated names)"),
)

def eval_every(config):
    """Steps between validations: eval_every, by default checkpoint_every
    (0: no validation)."""
    return (config.checkpoint_every if config.eval_every is None
            else config.eval_every)


_TASK_ONLY = {  # DataConfig fields that only one task reads
    "text_file": "text", "csv_file": "csv", "target_columns": "csv",
    "input_columns": "csv", "time_column": "csv", "id_column": "csv",
    "missing": "csv", "csv_delimiter": "csv", "target_transform": "csv"}



def _csv_column_problems(d):
    problems = []
    if d.time_column and d.time_column == d.id_column:
        problems.append(f"--time_column and --id_column must differ (both "
                        f"are {d.time_column!r})")
    for name in ("input_columns", "target_columns"):
        names = getattr(d, name)
        twice = sorted({c for c in names if names.count(c) > 1})
        if twice:
            problems.append(f"--{name} names {twice} more than once")
        for key in ("time_column", "id_column"):
            value = getattr(d, key)
            if value and value in names:
                problems.append(
                    f"--{name} must not hold the {key} {value!r} (it orders "
                    "or groups the rows; it is never an input or a target)")
    return problems


def problems(config):
    """Every problem of `config` (a TrainConfig), each naming the setting
    and what was expected; [] when it is valid."""
    d = config.data
    if d.csv_file is not None and not isinstance(d.csv_file, str):
        return ["--csv_file must be a path (config.json records it); for a "
                "pandas DataFrame use lstm_ctl.data.frame_task(df, config), "
                "or lstm_ctl.data.write_frame(df, path) and csv_file=path"]
    found = field_problems(config)
    default = DataConfig()
    for name, task in _TASK_ONLY.items():
        value = getattr(d, name)
        if d.task != task and value != getattr(default, name):
            found.append(f"--{name} is for --task={task} (got --{name}="
                         f"{_flag_text(value)} with --task={d.task})")
    found += _csv_column_problems(d)
    for applies, holds, message in RULES:
        if applies(config) and not holds(config):
            found.append(message(config) if callable(message) else message)
    return found


def _flag_text(value):
    return ",".join(value) if isinstance(value, tuple) else str(value)


def validate(config):
    """Raises one ValueError naming every bad setting and what was expected
    (the same message from flags, from Python and from a resumed run)."""
    found = problems(config)
    if found:
        raise ValueError("; ".join(found))
    return config



def to_dict(config):
    return dataclasses.asdict(config)


def from_dict(values):
    """A TrainConfig from `to_dict` output (as read back from JSON). Runs
    written before the one-seed change kept a copy of the seed at the top
    level; it equals data.seed there and is dropped."""
    values = dict(values)
    values.pop("seed", None)
    model = ModelConfig(**values.pop("model"))
    data = dict(values.pop("data"))
    for key in ("target_columns", "input_columns"):
        data[key] = tuple(data.get(key) or ())
    values["chosen_from_data"] = tuple(values.get("chosen_from_data") or ())
    return TrainConfig(model=model, data=DataConfig(**data), **values)


def changed_settings(old, new, keys):
    """`["data.batch_size: 4 -> 8", ...]`: each setting under `keys` whose
    value differs between the dicts `old` and `new` (nested dicts by their
    leaves)."""
    out = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        elif a != b:
            out.append(f"{prefix}: {a!r} -> {b!r}")

    for key in keys:
        walk(old.get(key), new.get(key), key)
    return out


def with_absolute_paths(config):
    """`config` with its data paths absolute (globs too), so that config.json
    works from any directory."""
    d = config.data
    paths = {k: os.path.abspath(getattr(d, k)) for k in ("text_file",
                                                         "csv_file")
             if getattr(d, k)}
    if not paths:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(d, **paths))


def with_input_columns(config, columns):
    """`config` with the resolved CSV input columns (what config.json
    records, so that resume and evaluation read the same columns)."""
    if config.data.task != "csv":
        return config
    data = dataclasses.replace(config.data, input_columns=tuple(columns))
    return dataclasses.replace(config, data=data)


def with_saved_input_columns(config):
    """A csv run resumed without --input_columns reads the columns its
    config.json recorded, not those a changed file would give by default."""
    d = config.data
    if d.task != "csv" or d.input_columns or not os.path.exists(
            config_path(config.model_dir)):
        return config
    saved = load(config.model_dir).data
    if saved.task != "csv" or not saved.input_columns:
        return config
    return with_input_columns(config, saved.input_columns)


def config_path(model_dir):
    return os.path.join(model_dir, CONFIG_FILE)


def save(config, model_dir):
    """Writes config.json atomically (a crash never leaves half a file)."""
    from lstm_ctl import files
    return files.write_json(config_path(model_dir), to_dict(config),
                            indent=2, sort_keys=True)


def load(model_dir):
    path = config_path(model_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {model_dir!r} is not a model dir written by "
            "train.py (it records its config there).")
    with open(path) as f:
        try:
            values = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    try:
        return from_dict(values)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} does not hold a lstm_ctl TrainConfig "
                         f"({e}).") from None
