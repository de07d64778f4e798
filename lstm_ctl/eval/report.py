"""Report writing, apart from computing: the text tables, the CSV files
and the figure of an evaluation, from the predictions and scores that
`engine.Evaluator` and `forecast.Forecaster` compute."""

import csv
import io

import numpy as np

from lstm_ctl.data.times import future_times
from lstm_ctl.run.holdout import spans

PLOT_HISTORY = 50       # history rows shown before the hold-out
PLOT_STEPS = 150        # hold-out rows shown (at least the forecast's)
MAX_PANELS = 4
LINE_STYLES = {  # the lines of `task.figure_lines`, by label
    "actual": dict(color="black", lw=1.2),
    "predicted (carry)": dict(color="tab:blue", lw=1),
    "predicted (reset)": dict(color="tab:red", lw=0.8, alpha=0.7),
    "carry": dict(color="tab:blue", lw=0.8),     # text: bits
    "reset": dict(color="tab:red", lw=0.8)}
PATH_STYLES = {"holdout_forecast_carry": ("tab:green", "-"),
               "holdout_forecast_reset": ("tab:purple", "--"),
               "holdout_forecast_naive": ("gray", ":")}


# ------------------------------------------------------------------ tables
def format_table(rows, metric):
    """A text table of eval rows, with reset - carry where both were run,
    then the forecast rows."""
    skill = [r for r in rows if "rmse" in r and "loss" not in r]
    rows = [r for r in rows if "loss" in r]
    width = max([len("checkpoint")] + [len(r["checkpoint"]) for r in rows])
    row = f"{{:<{width}}}  {{:>7}}  {{:<13}}  {{:>10}}  {{:>10}}"
    lines = [row.format("checkpoint", "step", "state", "loss", metric)]
    pairs = {}
    for r in rows:
        lines.append(row.format(r["checkpoint"], r["step"], r["state_mode"],
                                f"{r['loss']:.5f}", f"{r[metric]:.5f}"))
        pair = pairs.setdefault(r["checkpoint"], {})
        pair[r["state_mode"]] = r
        if r["state_mode"] == "reset" and "carry" in pair:
            lines.append(row.format(
                "", "", "reset - carry",
                f"{pair['reset']['loss'] - pair['carry']['loss']:+.5f}",
                f"{pair['reset'][metric] - pair['carry'][metric]:+.5f}"))
    if skill:
        lines += ["", format_skill(skill)]
    return "\n".join(lines)


# ------------------------------------------------------------------ CSV
def prediction_rows(task, series, carry, reset, max_steps=0):
    """Rows `[stream, time, column, actual, predicted_carry,
    predicted_reset]` of the hold-out steps, in data units (text: the
    characters, predictions by argmax; `task.actual_cells`,
    `task.output_cells`). `actual` is empty where the target is missing
    (weight 0)."""
    rows, cols = [], task.columns
    for s, (a, b), pc, pr in zip(series, spans(series, max_steps), carry,
                                 reset):
        actual = task.actual_cells(s, a, b)
        pc = task.output_cells(s, pc, a)
        pr = task.output_cells(s, pr, a)
        for j in range(b - a):
            for c, name in enumerate(cols):
                known = s.weights[a + j] > 0
                rows.append([s.name, s.times[a + j], name,
                             actual[j][c] if known else "", pc[j][c],
                             pr[j][c]])
    return rows


def forecast_rows(task, series, values):
    """Rows `[stream, step, time, column, future_forecast]` of the future
    forecast (the steps after each whole series), step 1..H, data units
    (text: the characters; `task.future_cells`); `time` is the step's time
    when the stream's times step regularly (`times.future_times`), else
    empty."""
    cols = task.columns
    rows = []
    for i, s in enumerate(series):
        horizon = values.shape[1]
        times = future_times(s.times, horizon) or [""] * horizon
        for h in range(horizon):
            cells = task.future_cells(values[i, h])
            for c, name in enumerate(cols):
                rows.append([s.name, h + 1, times[h], name, cells[c]])
    return rows


PREDICTION_HEADER = ["stream", "time", "column", "actual", "predicted_carry",
                     "predicted_reset"]
FORECAST_HEADER = ["stream", "step", "time", "column", "future_forecast"]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def format_skill(rows):
    """A text table of the hold-out forecast rows (`rmse` in data units)."""
    width = max(len("checkpoint"), *(len(r["checkpoint"]) for r in rows))
    line = f"{{:<{width}}}  {{:>7}}  {{:<22}}  {{:>7}}  {{:>10}}"
    out = [line.format("checkpoint", "step", "forecast", "steps", "rmse")]
    out += [line.format(r["checkpoint"], r["step"], r["state_mode"],
                        r["horizon"], f"{r['rmse']:.5f}") for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ figure
def figure_png(task, series, carry, reset, paths=None, title=""):
    """PNG bytes: actual vs predicted (carry, reset) over the hold-out for
    up to MAX_PANELS (stream, column) pairs, and the forecasts from the end
    of the history when given (`skill`'s paths). Text: bits per character
    of the actual next character, carry and reset. Matplotlib's Agg canvas,
    without pyplot (no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(i, c) for i in range(len(series))
              for c in range(len(task.columns))]
    panels = panels[:MAX_PANELS]
    height = 2.2 * len(panels) + 1.0   # inches
    fig = Figure(figsize=(10, height), dpi=80)
    FigureCanvasAgg(fig)
    # Margins in inches, fixed: half the time of a constrained layout.
    fig.subplots_adjust(left=0.07, right=0.985, top=1 - 0.75 / height,
                        bottom=0.5 / height, hspace=0.35)
    horizon = 0 if not paths else next(iter(paths.values())).shape[1]
    history = False  # rows before the hold-out shown (right of a line)
    for k, (i, c) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        s = series[i]
        a = spans([s])[0][0]
        n = min(len(carry[i]), max(PLOT_STEPS, horizon))
        ylabel, lines = task.figure_lines(s, a, n, c, carry[i], reset[i],
                                          PLOT_HISTORY)
        for label, x, y in lines:
            ax.plot(x, y, label=label, **LINE_STYLES[label])
        for name, values in (paths or {}).items():
            color, ls = PATH_STYLES[name]
            m = min(horizon, len(carry[i]))
            ax.plot(np.arange(a, a + m), values[i, :m, c], color=color,
                    ls=ls, lw=1.6, label=f"{name} ({horizon} steps)")
        if any(len(x) and x[0] < a for _, x, _ in lines):
            history = True
            ax.axvline(a - 0.5, color="gray", lw=0.5)
        ax.set_ylabel(ylabel)
        ax.set_title(f"stream {s.name}", fontsize=9, loc="left")
        if k == 0:
            ax.set_title(title, fontsize=8, loc="right")
    fig.legend(*ax.get_legend_handles_labels(), loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.02 / height), ncol=3, fontsize=8)
    fig.supxlabel("row of the stream" + (" (hold-out right of the gray line)"
                                         if history else " (the hold-out)"),
                  fontsize=8, y=0.03 / height)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
