"""Forecast quality on public series: lstm_ctl against darts' LSTM and naive.

    python benchmarks/forecast_quality.py              # every series, 3 seeds
    python benchmarks/forecast_quality.py --series=nile --seeds=0
    python benchmarks/forecast_quality.py --extra single=--ensemble=1 \
        --readme                                # the README's table
    python benchmarks/forecast_quality.py --series=nile --origins=7
                                # also from 6 earlier forecast origins

Needs darts and statsmodels beside lstm_ctl (for this benchmark only; the
series are statsmodels' bundled datasets, nothing is downloaded):

    .venv/bin/pip install torch==2.13.0 darts statsmodels pytorch-lightning

Protocol, the same for every model: the last 10% of each series is held out
(lstm_ctl's own split); the forecast starts at the end of the training part
and covers the first H = min(held-out rows, 52) held-out rows; RMSE in data
units; every model sees only the training part. Each model runs with 3
seeds; the table shows the mean RMSE and the worst/best seed.

- naive: the last training value repeated.
- darts LSTM: `RNNModel(model="LSTM")` with darts' own defaults (input chunk
  12, hidden 25, training length 24, 100 epochs, batch 32), on the series
  min-max scaled by darts' `Scaler`, as darts' examples do.
- lstm_ctl defaults: `train.py --task=csv --csv_file=F --target_columns=C`
  and nothing else: the settings lstm_ctl chooses from the data (an
  ensemble of 3 runs side by side); the score is the hold-out forecast of
  the mode it was trained in, as `evaluate.py` scores it by default (each
  member at its best checkpoint when validation ran on the history's end,
  never on the hold-out scored here, else its last).
- further lstm_ctl settings with `--extra NAME='--flag=v --flag=v'`, e.g.
  `--extra single=--ensemble=1` (one run instead of three).

lstm_ctl's seed s trains with `--seed=3s` (SEED_STRIDE): an ensemble's
members take seeds 3s to 3s+2, so two seeds' ensembles share no member.

Results (one JSON line per run) are cached in --out_dir and read back.
"""

import argparse
import contextlib
import io
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_HORIZON = 52
SEED_STRIDE = 3   # lstm_ctl's seed s trains with --seed=3s


def _load(module):
    import importlib
    return importlib.import_module(f"statsmodels.datasets.{module}").load(
    ).data


def nile():
    d = _load("nile")
    return d.assign(year=d["year"].astype(int)), "year", "volume"


def sunspots():
    d = _load("sunspots")
    return d.assign(YEAR=d["YEAR"].astype(int)), "YEAR", "SUNACTIVITY"


def elec_equip():
    d = _load("elec_equip")
    d = d.rename(columns={d.columns[0]: "index"})
    d.index = d.index.strftime("%Y-%m")
    return d.rename_axis("month").reset_index(), "month", "index"


def co2():
    d = _load("co2")
    d.index = d.index.strftime("%Y-%m-%d")
    return d.rename_axis("week").reset_index(), "week", "co2"


SERIES = {  # name: (loader, description)
    "nile": (nile, "river flows (Nile), yearly, 100 rows"),
    "sunspots": (sunspots, "sunspots, yearly, 309 rows"),
    "elec_equip": (elec_equip, "industrial index (EU electrical equipment), "
                   "monthly, 257 rows"),
    "co2": (co2, "CO2 at Mauna Loa, weekly, 2,284 rows (59 missing: "
            "filled forward)"),
}


def split(values):
    from lstm_ctl.data.readers import holdout_cut
    cut = holdout_cut(len(values))
    return cut, min(len(values) - cut, MAX_HORIZON)


def filled(values):
    """Missing values filled forward (the first from the next)."""
    import pandas as pd
    return pd.Series(values).ffill().bfill().to_numpy(float)


def rmse(pred, actual):
    return float(np.sqrt(np.mean((np.asarray(pred) - actual) ** 2)))


# ------------------------------------------------------------------ models
def run_naive(frame, value, seed, _):
    y = filled(frame[value].to_numpy(float))
    cut, h = split(y)
    return rmse(np.repeat(y[cut - 1], h), y[cut:cut + h]), {}


def run_darts(frame, value, seed, _):
    import logging
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    from darts import TimeSeries
    from darts.dataprocessing.transformers import Scaler
    from darts.models import RNNModel
    y = filled(frame[value].to_numpy(float))
    cut, h = split(y)
    scaler = Scaler()
    train = scaler.fit_transform(TimeSeries.from_values(y[:cut]))
    model = RNNModel(model="LSTM", input_chunk_length=12, random_state=seed,
                     pl_trainer_kwargs={"enable_progress_bar": False,
                                        "enable_model_summary": False,
                                        "logger": False,
                                        "accelerator": "cpu"})
    model.fit(train, verbose=False)
    pred = scaler.inverse_transform(model.predict(h, verbose=False))
    return rmse(pred.values()[:, 0], y[cut:cut + h]), {}


def run_lstm_ctl(frame, value, seed, flags, time_column, work):
    """train.py's run in process (`flags` beside the data flags), then the
    forecast of the first H held-out rows from the training part's end, as
    evaluate.py scores it (an ensemble: its members side by side)."""
    import train as train_py
    from lstm_ctl import config as config_lib
    from lstm_ctl.config import ensemble
    from lstm_ctl.eval import engine
    from lstm_ctl.eval.ensemble import Ensemble
    from lstm_ctl.eval.forecast import primary_forecast
    from lstm_ctl.train import trainer as trainer_lib

    csv = work / "data.csv"
    frame.to_csv(csv, index=False)
    model_dir = work / "run"
    argv = ["train.py", f"--csv_file={csv}", "--task=csv",
            f"--target_columns={value}", f"--time_column={time_column}",
            f"--model_dir={model_dir}", f"--seed={seed * SEED_STRIDE}",
            "--log_every=500",
            *(["--missing=ffill"] if frame[value].isna().any() else []),
            *flags]
    config_lib.parse_flags(train_py.FLAGS, argv, "train.py")
    config = config_lib.from_flags(train_py.FLAGS, config_lib.TrainConfig)
    out = io.StringIO()
    start = time.perf_counter()
    config, _ = train_py.resolve(config, out)
    with contextlib.redirect_stderr(io.StringIO()):
        trainer_lib.train(config, out=out)
    seconds = time.perf_counter() - start
    _, h = split(frame[value].to_numpy(float))
    members = ensemble.members(str(model_dir))
    if members:
        evaluator = Ensemble(str(model_dir), members, horizon=h)
        rows = evaluator.evaluate_members(warn=lambda _: None)
        used = [os.path.relpath(p, model_dir) for p in evaluator.checkpoints]
    else:
        evaluator = engine.Evaluator(str(model_dir), horizon=h)
        # The checkpoint evaluate.py uses by default: the best, chosen on
        # the history's end (never on the hold-out scored here), else the
        # last.
        path = evaluator.restore_default(lambda _: None)
        rows = evaluator.evaluate_checkpoint(path, write_summaries=False,
                                             restore=False)
        used = os.path.basename(path)
    evaluator.close()
    run_config = evaluator.config
    scores = {r["state_mode"]: r["rmse"] for r in rows
              if r["checkpoint"] == rows[-1]["checkpoint"] and "rmse" in r}
    name = primary_forecast(run_config.state_mode)
    chosen = {k: v for k, v in config_lib.to_dict(run_config).items()
              if k in ("state_mode", "train_steps")}
    chosen.update(units=run_config.model.units,
                  seq_len=run_config.data.seq_len,
                  batch_size=run_config.data.batch_size,
                  target_transform=run_config.data.target_transform,
                  checkpoint=used, ensemble=len(members or [0]))
    path = evaluator.last["paths"][name]
    info = dict(all=scores, train_seconds=round(seconds, 1), chosen=chosen,
                forecast=[round(float(v), 4) for v in path[0, :, 0]])
    return scores[name], info


# ------------------------------------------------------------------ table
def _number(value):
    """An RMSE with one decimal from 10 on, two below."""
    return f"{value:.{1 if abs(value) >= 10 else 2}f}"


TITLES = {"naive": "naive", "darts": "darts LSTM, defaults",
          "lstm_ctl": "lstm_ctl, defaults"}
README_START = "<!-- forecast_quality.py --readme: from here -->"
README_END = "<!-- forecast_quality.py --readme: to here -->"


def _cells(scores, spread=True):
    """A table row's cells: each variant's mean RMSE (worst / best seed,
    their ratio), the lowest mean of the models in bold. `scores`: {name:
    [RMSE of each seed]}, in column order."""
    means = {n: np.mean(v) for n, v in scores.items() if v and n != "naive"}
    best = min(means, key=means.get) if len(means) > 1 else None
    cells = []
    for name, vals in scores.items():
        if not vals:
            cells.append("")
            continue
        cell = _number(np.mean(vals))
        if name == best:
            cell = f"**{cell}**"
        if spread and len(vals) > 1 and name != "naive":
            cell += (f" ({_number(max(vals))} / {_number(min(vals))}, "
                     f"{max(vals) / min(vals):.2f}x)")
        cells.append(cell)
    return cells


def table(results, variants, seeds):
    """The markdown table: a row per series (and per earlier origin, with
    --origins: then also the mean over the origins). `variants`: {name:
    lstm_ctl flags}, in column order."""
    titles = [TITLES.get(n, f"lstm_ctl, `{' '.join(f)}`" if f else n)
              for n, f in variants.items()]
    lines = ["| series | H | " + " | ".join(titles) + " |",
             "|" + "---|" * (len(variants) + 2)]
    for series in SERIES:
        rows = [r for r in results if r["series"] == series]
        origins = sorted({r.get("rows") for r in rows},
                         key=lambda n: -(n or np.inf))
        per_origin = {name: [] for name in variants}
        for origin in origins:
            at = [r for r in rows if r.get("rows") == origin]
            scores = {name: [r["rmse"] for r in at if r["model"] == name
                             and r["seed"] in seeds] for name in variants}
            for name, vals in scores.items():
                if vals:
                    per_origin[name].append(np.mean(vals))
            label = SERIES[series][1] + (f": its first {origin} rows"
                                         if origin else "")
            lines.append(f"| {label} | {at[0]['horizon']} | "
                         + " | ".join(_cells(scores)) + " |")
        if len(origins) > 1:
            lines.append(f"| {SERIES[series][1]}: mean of the "
                         f"{len(origins)} origins | | "
                         + " | ".join(_cells(per_origin, spread=False))
                         + " |")
    return "\n".join(lines)


def write_readme(path, text):
    """Replaces the table between README_START and README_END in `path`."""
    readme = path.read_text()
    if README_START not in readme or README_END not in readme:
        raise SystemExit(f"{path} has no {README_START!r} ... "
                         f"{README_END!r} block to replace.")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_START}\n{text}\n{README_END}{tail}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", default=",".join(SERIES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default="naive,darts,lstm_ctl")
    p.add_argument("--extra", action="append", default=[],
                   help="NAME='--flag=v ...': lstm_ctl with these flags too")
    p.add_argument("--origins", type=int, default=1,
                   help="forecast from this many origins: the whole series, "
                   "and the series cut H/2, H, ... rows shorter (each with "
                   "its own last 10%% held out)")
    p.add_argument("--readme", action="store_true",
                   help="write the table into README.md (between its "
                   "forecast_quality.py markers)")
    p.add_argument("--out_dir", default=str(ROOT / "runs" / "forecast"))
    args = p.parse_args()
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = out_dir / "results.jsonl"
    results = ([json.loads(line) for line in cache.read_text().splitlines()]
               if cache.exists() else [])
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = {m: [] for m in args.models.split(",") if m}
    for spec in args.extra:
        name, _, flags = spec.partition("=")
        variants[name] = flags.split()
    runners = {"naive": run_naive, "darts": run_darts}
    current = []   # this run's rows: cached or new
    for series in args.series.split(","):
        whole, time_column, value = SERIES[series][0]()
        _, h = split(whole[value].to_numpy(float))
        for origin, name, seed in (
                (k, name, seed) for k in range(args.origins)
                for name in variants
                for seed in (seeds if name != "naive" else seeds[:1])):
            flags = variants[name]
            rows = len(whole) - origin * max(1, h // 2)
            frame = whole.iloc[:rows].reset_index(drop=True)
            key = dict(series=series, model=name, seed=seed,
                       flags=flags, **({"rows": rows} if origin else {}))
            if name not in runners:
                key.update(train_seed=seed * SEED_STRIDE)
            cached = [r for r in results if r.get("rows") == key.get("rows")
                      and all(r.get(k) == v for k, v in key.items())]
            if cached:   # the newest row of this run
                current.append(cached[-1])
                continue
            work = (out_dir / series / name.replace(" ", "_")
                    / (f"{seed}" if not origin else f"{seed}-{rows}"))
            if work.exists():
                import shutil
                shutil.rmtree(work)
            work.mkdir(parents=True)
            start = time.perf_counter()
            if name in runners:
                score, info = runners[name](frame, value, seed, flags)
            else:
                score, info = run_lstm_ctl(frame, value, seed, flags,
                                           time_column, work)
            row = dict(key, rmse=score,
                       horizon=split(frame[value].to_numpy(float))[1],
                       seconds=round(time.perf_counter() - start, 1),
                       **info)
            print(json.dumps(row), flush=True)
            results.append(row)
            current.append(row)
            with open(cache, "a") as f:
                f.write(json.dumps(row) + "\n")
    text = table(current, variants, seeds)
    print(text)
    if args.readme:
        write_readme(ROOT / "README.md", text)
        print(f"Wrote the table into {ROOT / 'README.md'}")


if __name__ == "__main__":
    main()
