"""lstm_ctl: full control of an LSTM's recurrent state in TensorFlow 2.

The public names are loaded on first use, so that `lstm_ctl.config` (read by
the entry points to check flags) does not import TensorFlow.
"""

__all__ = ["LSTMModel", "LSTMState"]
__version__ = "0.1.0"

_PUBLIC = {"LSTMModel": "lstm_ctl.core.model", "LSTMState": "lstm_ctl.core.state"}


def __getattr__(name):
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lstm_ctl' has no attribute {name!r}")
