"""Frozen dataclasses: what a run is. Only the entry points read flags.

`TrainConfig` is written to `<model_dir>/config.json`, so that evaluation
rebuilds the model and the data from it rather than from flags.
"""

import dataclasses
import json
import os
from typing import Optional, Tuple

TASKS = ("sine", "text", "csv")
STATE_MODES = ("carry", "reset", "stored")
EVAL_MODES = ("carry", "reset", "both")
INITIAL_STATE_MODES = ("zeros", "learned")
LR_SCHEDULES = ("constant", "cosine")
STRATEGIES = ("default", "mirrored", "multi_worker")
MISSING_MODES = ("error", "ffill", "drop")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    units: int = 128
    num_layers: int = 1
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    initial_state_mode: str = "zeros"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    task: str = "sine"
    seq_len: int = 20
    batch_size: int = 32
    seed: int = 0
    text_file: Optional[str] = None
    csv_file: Optional[str] = None
    target_columns: Tuple[str, ...] = ()
    # csv: () means every column other than the time and id columns;
    # config.json holds the resolved list (see with_input_columns).
    input_columns: Tuple[str, ...] = ()
    time_column: Optional[str] = None
    id_column: Optional[str] = None
    missing: str = "error"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str = "runs/default"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train_steps: int = 4000
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"
    clip_norm: float = 1.0
    state_mode: str = "carry"
    burn_in: int = 0
    reset_every: int = 0
    jit_compile: bool = False
    precision: str = "float32"
    strategy: str = "default"
    cpu_replicas: int = 0
    deterministic: bool = False
    skip_nonfinite: bool = False
    seed: int = 0
    log_every: int = 100
    hist_every: int = 500
    checkpoint_every: int = 500
    max_to_keep: int = 10
    # Validation: score the hold-out every N steps (None: checkpoint_every;
    # 0: never), keep the best checkpoint in <model_dir>/best; stop after
    # `early_stopping` evaluations without improvement (0: never).
    eval_every: Optional[int] = None
    early_stopping: int = 0


def validate(config: TrainConfig):
    """Raises ValueError naming the first bad value and what was expected."""
    m, d = config.model, config.data

    def check(ok, message):
        if not ok:
            raise ValueError(message)

    check(m.units >= 1, f"units must be >= 1; got {m.units}")
    check(m.num_layers >= 1, f"num_layers must be >= 1; got {m.num_layers}")
    for name in ("dropout", "recurrent_dropout"):
        value = getattr(m, name)
        check(0.0 <= value < 1.0, f"{name} must be in [0, 1); got {value}")
    check(m.initial_state_mode in INITIAL_STATE_MODES,
          f"initial_state_mode must be one of {INITIAL_STATE_MODES}; got "
          f"{m.initial_state_mode!r}")
    check(d.task in TASKS, f"task must be one of {TASKS}; got {d.task!r}")
    check(d.seq_len >= 1, f"seq_len must be >= 1; got {d.seq_len}")
    check(d.batch_size >= 1, f"batch_size must be >= 1; got {d.batch_size}")
    if d.task == "text":
        check(bool(d.text_file), "task=text needs --text_file (a UTF-8 file)")
    if d.task == "csv":
        check(bool(d.csv_file), "task=csv needs --csv_file")
        check(bool(d.target_columns),
              "task=csv needs --target_columns (comma-separated names)")
    _check_csv_columns(d, check)
    check(config.train_steps >= 1,
          f"train_steps must be >= 1; got {config.train_steps}")
    check(config.learning_rate > 0,
          f"learning_rate must be > 0; got {config.learning_rate}")
    check(config.lr_schedule in LR_SCHEDULES,
          f"lr_schedule must be one of {LR_SCHEDULES}; got "
          f"{config.lr_schedule!r}")
    check(config.clip_norm >= 0,
          f"clip_norm must be >= 0 (0 turns clipping off); got "
          f"{config.clip_norm}")
    check(config.state_mode in STATE_MODES,
          f"state_mode must be one of {STATE_MODES}; got "
          f"{config.state_mode!r}")
    check(config.precision in PRECISIONS,
          f"precision must be one of {PRECISIONS}; got {config.precision!r}")
    check(config.burn_in >= 0,
          f"burn_in must be >= 0 (0: none); got {config.burn_in}")
    check(config.burn_in == 0 or config.state_mode != "carry",
          "burn_in needs state_mode=reset or stored: in carry mode the "
          "state already comes from the stream's previous steps")
    check(config.strategy in STRATEGIES,
          f"strategy must be one of {STRATEGIES}; got {config.strategy!r}")
    check(config.cpu_replicas >= 0,
          f"cpu_replicas must be >= 0; got {config.cpu_replicas}")
    check(config.cpu_replicas == 0 or config.strategy == "mirrored",
          "cpu_replicas needs strategy=mirrored")
    check(config.reset_every >= 0,
          f"reset_every must be >= 0 (0: never); got {config.reset_every}")
    for name in ("log_every", "hist_every", "checkpoint_every", "max_to_keep"):
        value = getattr(config, name)
        check(value >= 1, f"{name} must be >= 1; got {value}")
    check(config.eval_every is None or config.eval_every >= 0,
          f"eval_every must be >= 0 (0 turns validation off); got "
          f"{config.eval_every}")
    check(config.early_stopping >= 0,
          f"early_stopping must be >= 0 (0: never); got "
          f"{config.early_stopping}")
    check(not config.early_stopping or eval_every(config) > 0,
          "early_stopping needs validation: eval_every must not be 0")
    return config


def eval_every(config):
    """Steps between validations: eval_every, by default checkpoint_every
    (0: no validation)."""
    return (config.checkpoint_every if config.eval_every is None
            else config.eval_every)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What evaluate.py is asked to do (the run itself comes from
    `<model_dir>/config.json`)."""
    model_dir: Optional[str] = None
    checkpoint: Optional[str] = None      # a path, "best" or "latest"
    all: bool = False
    watch: bool = False
    watch_timeout: float = 600.0
    state_mode: str = "both"
    # "history", "none" or a number of rows N (the last N history rows);
    # None: the task's default.
    warmup: Optional[str] = None
    eval_steps: int = 0
    predictions_csv: Optional[str] = None
    forecast: int = 0
    forecast_csv: Optional[str] = None
    plot: Optional[str] = None
    output_json: Optional[str] = None
    sample: int = 0
    prime: str = "\n"
    temperature: float = 1.0
    seed: Optional[int] = None           # --sample's seed (None: the run's)
    export_dir: Optional[str] = None
    csv_file: Optional[str] = None       # evaluate on another file
    text_file: Optional[str] = None


def eval_problems(e: EvalConfig):
    """Every problem of an EvalConfig on its own, as one list of messages
    (empty when it is fine); checks that need no file."""
    out = []
    if not e.model_dir:
        out.append("--model_dir is required")
    if sum([bool(e.all), bool(e.watch), bool(e.checkpoint)]) > 1:
        out.append("--all, --watch and --checkpoint exclude each other")
    if e.state_mode not in EVAL_MODES:
        out.append(f"--state_mode must be one of {EVAL_MODES}; got "
                   f"{e.state_mode!r}")
    if e.warmup is not None and e.warmup not in ("history", "none"):
        if not (str(e.warmup).isdigit() and int(e.warmup) >= 1):
            out.append(f"--warmup must be history, none or a number of "
                       f"rows >= 1; got {e.warmup!r}")
    for name in ("eval_steps", "forecast", "sample"):
        if getattr(e, name) < 0:
            out.append(f"--{name} must be >= 0; got {getattr(e, name)}")
    if e.watch_timeout < 0:
        out.append(f"--watch_timeout must be >= 0; got {e.watch_timeout}")
    if e.forecast_csv and e.forecast <= 0:
        out.append("--forecast_csv needs --forecast=H (the number of steps, "
                   "> 0)")
    if not e.temperature > 0:
        out.append(f"--temperature must be > 0; got {e.temperature}")
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


def _check_csv_columns(d, check):
    check(d.task == "text" or not d.text_file,
          f"text_file is for task=text; got text_file={d.text_file!r} with "
          f"task={d.task!r}")
    csv_only = dict(input_columns=d.input_columns, time_column=d.time_column,
                    id_column=d.id_column, csv_file=d.csv_file,
                    target_columns=d.target_columns)
    for name, value in csv_only.items():
        check(d.task == "csv" or not value,
              f"{name} is for task=csv; got {name}={value!r} with "
              f"task={d.task!r}")
    check(d.missing in MISSING_MODES, f"missing must be one of "
          f"{MISSING_MODES}; got {d.missing!r}")
    check(not d.time_column or d.time_column != d.id_column,
          f"time_column and id_column must differ; both are "
          f"{d.time_column!r}")
    for name in ("input_columns", "target_columns"):
        names = getattr(d, name)
        twice = sorted({c for c in names if names.count(c) > 1})
        check(not twice, f"{name} names {twice} more than once")
        for key in ("time_column", "id_column"):
            value = getattr(d, key)
            check(not value or value not in names,
                  f"{name} must not hold the {key} {value!r} (it orders or "
                  "groups the rows; it is never an input or a target)")


def to_dict(config):
    return dataclasses.asdict(config)


def from_dict(values):
    """A TrainConfig from `to_dict` output (as read back from JSON)."""
    values = dict(values)
    model = ModelConfig(**values.pop("model"))
    data = dict(values.pop("data"))
    for key in ("target_columns", "input_columns"):
        data[key] = tuple(data.get(key) or ())
    return TrainConfig(model=model, data=DataConfig(**data), **values)


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


def config_path(model_dir):
    return os.path.join(model_dir, CONFIG_FILE)


def save(config, model_dir):
    """Writes config.json atomically (a crash never leaves half a file)."""
    os.makedirs(model_dir, exist_ok=True)
    path = config_path(model_dir)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(to_dict(config), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


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
