"""The one source of every setting: frozen dataclasses whose fields carry
their default, help and check. The entry points generate their absl flags
from them (`define_flags`, `from_flags`, `parse_flags`) and check a config
the same way whether it came from flags, from Python or from a resumed
run's config.json. Only the entry points read flags. No TensorFlow here:
the entry points check flags and data before importing it.

fields.py   the machinery (setting, checks, flags)
train.py    TrainConfig, ModelConfig, DataConfig; rules; config.json
evaluate.py EvalConfig (evaluate.py's flags)
serve.py    ServeConfig (serve.py's flags)
defaults.py settings chosen from the data when train.py is not given them
            (imported by train.py and the trainer; it reads data)
"""

from lstm_ctl.config.fields import (  # noqa: F401
    AT_LEAST_0, AT_LEAST_1, FRACTION, POSITIVE, define_flags,
    field_problems, from_flags, parse_flags, setting)
from lstm_ctl.config.train import (  # noqa: F401
    CONFIG_FILE, INITIAL_STATE_MODES, LR_SCHEDULES, MISSING_MODES,
    PRECISIONS, RULES, STATE_MODES, STRATEGIES, TASKS, DataConfig,
    ModelConfig, TrainConfig, changed_settings, config_path, eval_every,
    from_dict, load, problems, save, to_dict, validate, with_absolute_paths,
    with_input_columns, with_saved_input_columns)
from lstm_ctl.config.evaluate import (  # noqa: F401
    EVAL_MODES, EvalConfig, eval_problems)
from lstm_ctl.config.serve import ServeConfig, validate_serve  # noqa: F401
