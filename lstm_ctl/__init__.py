"""lstm_ctl: full control of an LSTM's recurrent state in TensorFlow 2."""

from lstm_ctl.model import LSTMModel
from lstm_ctl.state import LSTMState

__all__ = ["LSTMModel", "LSTMState"]
__version__ = "0.1.0"
