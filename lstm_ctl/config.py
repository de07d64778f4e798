"""What a run is: frozen dataclasses, the one source of every setting.

Each field is written once, with its default, its help and its check; the
entry points generate their absl flags from the fields (`define_flags`,
`from_flags`), and `validate` checks a config the same way whether it came
from flags, from Python or from a resumed run's config.json. Only the entry
points read flags. `TrainConfig` is written to `<model_dir>/config.json`, so
that evaluation rebuilds the model and the data from it rather than from
flags. No TensorFlow here: the entry points check flags and data before
importing it.
"""

import dataclasses
import json
import os
import typing
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

# Checks on one value: (test, what is expected).
AT_LEAST_0 = (lambda v: v >= 0, ">= 0")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
POSITIVE = (lambda v: v > 0, "> 0")
FRACTION = (lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def setting(default, help, check=None, choices=None, flag=True):
    """A config field: its default, its flag's help, and its check."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, check=check, choices=choices, flag=flag))


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
        "before it, at its latest visit).", choices=STATE_MODES)
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

    @property
    def seed(self):
        """The run's one seed (data, weights, dropout): `data.seed`."""
        return self.data.seed


# Rules between settings: (applies, holds, message or message(config)).
# Each names the flags.
RULES = (
    (lambda c: True,
     lambda c: c.burn_in == 0 or c.state_mode != "carry",
     "--burn_in needs --state_mode=reset or stored (in carry mode the state "
     "already comes from the stream's previous steps)"),
    (lambda c: True,
     lambda c: c.reset_every == 0 or c.state_mode == "carry",
     "--reset_every needs --state_mode=carry (in reset and stored modes "
     "every chunk already starts from the initial or its stored state)"),
    (lambda c: True,
     lambda c: c.cpu_replicas == 0 or c.strategy == "mirrored",
     "--cpu_replicas needs --strategy=mirrored"),
    (lambda c: c.strategy == "mirrored" and c.cpu_replicas > 0,
     lambda c: c.data.batch_size % c.cpu_replicas == 0,
     lambda c: f"--batch_size={c.data.batch_size} (the global batch) is not "
     f"divisible by the {c.cpu_replicas} replicas (--cpu_replicas)"),
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

_TASK_ONLY = {  # DataConfig fields that only one task reads
    "text_file": "text", "csv_file": "csv", "target_columns": "csv",
    "input_columns": "csv", "time_column": "csv", "id_column": "csv",
    "missing": "csv", "csv_delimiter": "csv"}


def _leaves(cls, prefix=()):
    """`(path, field)` of every setting of a config class, nested first."""
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default):
            yield from _leaves(type(f.default), prefix + (f.name,))
        else:
            yield prefix + (f.name,), f


def _get(config, path):
    for name in path:
        config = getattr(config, name)
    return config


def _field_problems(config):
    problems = []
    for path, f in _leaves(type(config)):
        value, meta, name = _get(config, path), f.metadata, path[-1]
        choices = meta.get("choices")
        if choices and value not in choices:
            problems.append(f"--{name} must be one of {', '.join(choices)} "
                            f"(got {value!r})")
        check = meta.get("check")
        if check and not check[0](value):
            problems.append(f"--{name} must be {check[1]} (got {value!r})")
    return problems


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
    found = _field_problems(config)
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


# ------------------------------------------------------------------ flags
def define_flags(flag_values, cls=TrainConfig, defaults=None):
    """Defines one absl flag per setting of `cls` in `flag_values`, named
    after the field, with its default and help. Checks are left to
    `validate`, so a bad value gets the same message as from Python."""
    from absl import flags
    defaults = defaults or cls()
    for path, f in _leaves(cls):
        if not f.metadata.get("flag", True):
            continue
        name, default = path[-1], _get(defaults, path)
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_text += f" One of: {', '.join(choices)}."
        kind = _kind(f.type)
        if kind is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text,
                                 flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text,
                               flag_values=flag_values)
        elif kind is tuple:
            flags.DEFINE_list(name, list(default), help_text,
                              flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help_text,
                                flag_values=flag_values)


def _kind(annotation):
    """int, float, bool, tuple or str for a field's type annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:   # Optional[X]
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(args[0])
    if origin is tuple:
        return tuple
    return annotation if annotation in (bool, int, float) else str


def from_flags(flag_values, cls=TrainConfig):
    """The `cls` config that the parsed `flag_values` describe."""
    def build(klass, prefix=()):
        values = {}
        for f in dataclasses.fields(klass):
            if dataclasses.is_dataclass(f.default):
                values[f.name] = build(type(f.default), prefix + (f.name,))
            elif f.metadata.get("flag", True):
                value = getattr(flag_values, f.name)
                values[f.name] = tuple(value) if _kind(f.type) is tuple \
                    else value
        return klass(**values)
    return build(cls)


# -------------------------------------------------------------- config.json
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
    return TrainConfig(model=model, data=DataConfig(**data), **values)


def changed_settings(old, new, keys):
    """`"name: old -> new"` for each setting under `keys` (top-level names
    of a TrainConfig dict) whose value differs, naming the leaf setting."""
    changes = []

    def walk(a, b, name):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a:
                walk(a[k], b.get(k), k)
        elif a != b:
            changes.append(f"{name}: {a} -> {b}")
    for key in keys:
        walk(old.get(key), new.get(key), key)
    return changes


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


def parse_flags(flag_values, argv, prog):
    """Parses `argv` into `flag_values` (defaults first, so a process can
    parse twice). `--help` prints the flags and exits 0; an unknown flag, a
    malformed value or a stray argument is one line on stderr, exit 1."""
    import sys
    from absl import flags
    if any(a in ("--help", "-h", "--helpshort", "--helpfull")
           for a in argv[1:]):
        text = flag_values.get_help(include_special_flags=False)
        print(f"{prog} [--flags]\n{text}")
        sys.exit(0)
    flag_values.unparse_flags()
    try:
        rest = flag_values(argv)
    except flags.Error as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    if len(rest) > 1:
        print(f"{prog}: error: unexpected arguments: {rest[1:]}",
              file=sys.stderr)
        sys.exit(1)


# ---------------------------------------------------------------- serving
@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What serve.py's flags set (each field is a flag); not saved."""
    model_dir: Optional[str] = setting(None, "A model dir written by "
                                       "train.py.")
    checkpoint: str = setting("latest", "latest, best (the checkpoint in "
                              "<model_dir>/best/) or a checkpoint path.")
    host: str = setting("127.0.0.1", "Address to listen on (loopback unless "
                        "told otherwise).")
    port: int = setting(8500, "Port to listen on (0: any free port; the one "
                        "taken is printed).",
                        (lambda v: 0 <= v < 65536, "in [0, 65535]"))
    capacity: int = setting(10000, "Streams held at once; a new stream "
                            "beyond it gets 503 with Retry-After.",
                            AT_LEAST_1)
    idle_timeout: float = setting(0.0, "Evict a stream after this many "
                                  "seconds without a request (0: never).",
                                  AT_LEAST_0)
    snapshot_dir: Optional[str] = setting(
        None, "Restore the streams from here at start, snapshot them here "
        "periodically and on SIGTERM.")
    snapshot_every: float = setting(
        60.0, "Seconds between snapshots (0: only on SIGTERM); SIGKILL loses "
        "at most the steps since the last one.", AT_LEAST_0)
    max_wait_ms: float = setting(2.0, "Milliseconds a step waits for "
                                 "requests of other streams to join its "
                                 "batch.", AT_LEAST_0)
    auth_token_file: Optional[str] = setting(
        None, "A file holding a token; requests then need 'Authorization: "
        "Bearer <token>' (all but /healthz).")
    max_body_bytes: int = setting(1 << 20, "Largest request body accepted "
                                  "(413 beyond).", AT_LEAST_1)
    max_rows: int = setting(1000, "Most timesteps in one step request.",
                            AT_LEAST_1)


def validate_serve(config):
    """Raises one ValueError naming every bad serve.py setting."""
    found = _field_problems(config)
    if not config.model_dir:
        found.insert(0, "--model_dir is required (a model dir written by "
                        "train.py)")
    if found:
        raise ValueError("; ".join(found))
    return config
