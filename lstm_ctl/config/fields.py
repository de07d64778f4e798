"""The machinery of the one config source: a field written once with its
default, its flag's help and its check (`setting`); the checks of every
field of a config (`field_problems`); absl flags generated from a config
class (`define_flags`, `from_flags`, `parse_flags`). No TensorFlow."""

import dataclasses
import typing


# Checks on one value: (test, what is expected).
AT_LEAST_0 = (lambda v: v >= 0, ">= 0")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
POSITIVE = (lambda v: v > 0, "> 0")
FRACTION = (lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def setting(default, help, check=None, choices=None, flag=True):
    """A config field: its default, its flag's help, and its check."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, check=check, choices=choices, flag=flag))


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


def field_problems(config):
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



def define_flags(flag_values, cls, defaults=None, chosen=(),
                 chosen_help=""):
    """Defines one absl flag per setting of `cls` in `flag_values`, named
    after the field, with its default and help. Checks are left to
    `validate`, so a bad value gets the same message as from Python.
    `chosen`: settings whose flag defaults to None (chosen later, e.g. from
    the data), `chosen_help` added to their help."""
    from absl import flags
    defaults = defaults or cls()
    for path, f in _leaves(cls):
        if not f.metadata.get("flag", True):
            continue
        name, default = path[-1], _get(defaults, path)
        help_text = f.metadata.get("help", "")
        if name in chosen:
            default, help_text = None, f"{help_text} {chosen_help}"
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


def from_flags(flag_values, cls):
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
