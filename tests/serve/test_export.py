"""Export: SavedModel signatures in a process without lstm_ctl, TFLite step,
and Keras .keras saving."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_ctl import LSTMModel, LSTMState
from lstm_ctl.serve import export

ROOT = pathlib.Path(__file__).resolve().parents[2]
ATOL = 1e-5

LOADER = r'''
import sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
data = np.load(sys.argv[2])
out = {}
for batch in (1, 3):
    state = loaded.signatures["initial_state"](batch_size=tf.constant(batch))
    served = loaded.signatures["serve"](inputs=data[f"x{batch}"], **state)
    out[f"serve{batch}"] = served["outputs"].numpy()
    out[f"serve_h{batch}"] = served["h_1"].numpy()
    # Stream the same sequence one step at a time, feeding the state back.
    for t in range(data[f"x{batch}"].shape[1]):
        result = loaded.signatures["step"](x_t=data[f"x{batch}"][:, t],
                                           **state)
        state = {k: v for k, v in result.items() if k != "y_t"}
        out[f"step{batch}_{t}"] = result["y_t"].numpy()
    out[f"step_h{batch}"] = state["h_1"].numpy()
assert not any(m.startswith("lstm_ctl") for m in sys.modules)
np.savez(sys.argv[3], **out)
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = LSTMModel(units=8, output_dim=3, num_layers=2, input_dim=4,
                      initial_state_mode="learned")
    for w in model.weights:
        if "initial_" in w.path:
            w.assign(np.random.default_rng(0).normal(size=w.shape)
                     .astype("float32"))
    export_dir = tmp_path_factory.mktemp("export") / "model"
    export.export(model, str(export_dir))
    return model, export_dir


@pytest.mark.slow
def test_saved_model_in_a_fresh_process_without_lstm_ctl(exported, tmp_path):
    model, export_dir = exported
    rng = np.random.default_rng(1)
    inputs = {f"x{b}": rng.normal(size=(b, 5, 4)).astype("float32")
              for b in (1, 3)}
    np.savez(tmp_path / "in.npz", **inputs)
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    result = subprocess.run(
        [sys.executable, str(script), str(export_dir), str(tmp_path / "in.npz"),
         str(tmp_path / "out.npz")], capture_output=True, text=True,
        timeout=120, cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npz")
    for b in (1, 3):
        expected, final = model(inputs[f"x{b}"])   # from the initial state
        np.testing.assert_allclose(out[f"serve{b}"], expected, atol=ATOL)
        np.testing.assert_allclose(out[f"serve_h{b}"], final[1].h, atol=ATOL)
        for t in range(5):
            np.testing.assert_allclose(out[f"step{b}_{t}"], expected[:, t],
                                       atol=ATOL)
        np.testing.assert_allclose(out[f"step_h{b}"], final[1].h, atol=ATOL)


def test_signatures_use_the_same_state_names_in_and_out(exported):
    _, export_dir = exported
    loaded = tf.saved_model.load(str(export_dir))
    names = {"h_0", "c_0", "h_1", "c_1"}
    init = loaded.signatures["initial_state"]
    assert set(init.structured_outputs) == names
    for key, extra_in, extra_out in (("serve", "inputs", "outputs"),
                                     ("step", "x_t", "y_t")):
        fn = loaded.signatures[key]
        assert set(fn.structured_input_signature[1]) == names | {extra_in}
        assert set(fn.structured_outputs) == names | {extra_out}


def test_tflite_step_matches(exported):
    model, export_dir = exported
    # LiteRT's interpreter: tf.lite.Interpreter is deprecated in TF 2.21.
    litert = pytest.importorskip(
        "ai_edge_litert.interpreter",
        reason="ai-edge-litert (the TFLite runtime) is not installed: "
        "pip install ai-edge-litert")
    interpreter = litert.Interpreter(str(export_dir / export.TFLITE_FILE))
    runner = interpreter.get_signature_runner("step")
    x = np.random.default_rng(2).normal(size=(2, 6, 4)).astype("float32")
    expected, _ = model(x)
    init = model.initial_state(2)
    state = {"h_0": init[0].h, "c_0": init[0].c, "h_1": init[1].h,
             "c_1": init[1].c}
    state = {k: np.asarray(v) for k, v in state.items()}
    for t in range(6):
        result = runner(x_t=x[:, t], **state)
        np.testing.assert_allclose(result["y_t"], expected[:, t], atol=ATOL)
        state = {k: v for k, v in result.items() if k != "y_t"}


def test_export_refuses_a_stateful_model(tmp_path):
    model = LSTMModel(units=4, input_dim=2, stateful=True)
    with pytest.raises(ValueError, match="stateful=False"):
        export.export_saved_model(model, str(tmp_path / "x"))


def test_keras_save_and_load_round_trip(tmp_path):
    model = LSTMModel(units=8, output_dim=2, num_layers=2, input_dim=3,
                      initial_state_mode="learned", dropout=0.1)
    for w in model.weights:
        if "initial_" in w.path:
            w.assign(np.full(w.shape, 0.2, "float32"))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, LSTMModel)
    assert loaded.get_config() == model.get_config()
    x = np.random.default_rng(3).normal(size=(2, 5, 3)).astype("float32")
    state = (LSTMState(np.ones((2, 8), "float32"), np.ones((2, 8), "float32")),
             LSTMState(np.zeros((2, 8), "float32"),
                       np.zeros((2, 8), "float32")))
    for kwargs in ({}, {"initial_state": state}):
        a, sa = model(x, **kwargs)
        b, sb = loaded(x, **kwargs)
        np.testing.assert_allclose(a, b, atol=ATOL)
        np.testing.assert_allclose(sa[1].c, sb[1].c, atol=ATOL)
