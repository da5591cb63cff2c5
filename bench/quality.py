"""Model quality of pdmflow against its reference model and a plain LightGBM script.

For each data set pdmflow runs in this process through its public step functions, as `main`
does: ingest (the generated or converted frames, `source.kind: dataframe`), features, tune,
train, evaluate, promote, into a fresh SQLite MLflow store in a temp dir. Each data set gets
three rows:
- pdmflow: the candidate's test metrics, read from the evaluate run, and whether promote
  released it with the config's gates (when not, the note lists each failed gate with its value
  and bound, from promote's gate_results.json);
- reference: the plain reference model the evaluate run scores beside the candidate, read from
  its `reference_<metric>` metrics ('-' when the run has none);
- plain script: what a data scientist writes in an afternoon, on exactly pdmflow's rows: per
  device, rolling mean and std over 5, 10 and 20 readings and the first difference of every
  continuous sensor (pandas groupby), joined on (device, time) to pdmflow's train, validation
  and test rows; `LGBMClassifier(n_estimators=400)` (or `LGBMRegressor` for remaining useful
  life) fitted on train + validation and scored on test at threshold 0.5.

Data sets (`--only` takes their names, comma-separated):
- calendar_fleet: configs/default.yaml, a fleet observed side by side, split by time;
- run_to_failure: bench/configs/run_to_failure.yaml, 100 units run to failure (C-MAPSS shape),
  split by device;
- process_log: bench/configs/process_log.yaml, one machine's log with a machine_failure column
  (AI4I 2020 shape), split by time;
- run_to_failure_rul: bench/configs/run_to_failure_rul.yaml, remaining useful life on the
  run-to-failure fleet;
- component_fleet: bench/configs/component_fleet.yaml, 20 machines read hourly for 90 days
  (volt, rotate, pressure, vibration: the Azure PdM telemetry's shape) whose failures are of
  four components, each showing in its one sensor only; split by time, horizon 24 h;
- cmapss_fd003: real data, NASA C-MAPSS FD003's 100 test engines read in place from
  --cmapss-dir (default ../shared/data/cmapss_fd003): device = engine, timestamp = 2000-01-01 +
  cycle hours, the 18 settings and sensors that vary in FD003, one failure event per engine at
  last cycle + its RUL (after its last reading); fails within 30 cycles, split by device;
- cmapss_fd003_rul: remaining useful life on FD003, capped at 125 cycles, split by device.
The real data sets are skipped (and the table says so) when the folder is absent.

    python bench/quality.py [--only NAME[,NAME]] [--trials N] [--quick] [--set KEY=VALUE]
                            [--splits N] [--cmapss-dir DIR]
                            (or PDMFLOW_BENCH_DATA=DIR holding cmapss_fd003/)

`--splits N`: a data set split by device is run on N device splits (split.seed, seed + 1, ...)
and a second table gives, per model, the mean and range of each metric over them and in how
many the default gates released: with a few failing devices in test (FD003 has 20 engines with
any failing reading, 3 of them in the first split's test), one split's precision moves by
0.1 when one engine's alerts do.

`--quick` shrinks every data set for a smoke check of the bench itself (FD003: the first 30
engines); its numbers mean little. Nothing here is asserted; the table is printed to stdout,
progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import optuna
import pandas as pd
import yaml

from pdmflow.artifacts import label_column, read_dataset, read_features
from pdmflow.config import TenantConfig, load_config
from pdmflow.data.sources import read_source
from pdmflow.errors import GateFailure
from pdmflow.evaluation.gates import GateResult
from pdmflow.evaluation.metrics import (
    classification_metrics,
    expected_calibration_error,
    nasa_score,
)
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.promote import run_promote
from pdmflow.steps.train import run_train
from pdmflow.steps.tune import run_tune
from pdmflow.tracking import latest_step_run

REPO = Path(__file__).resolve().parents[1]
BASELINE_WINDOWS = (5, 10, 20)  # readings
BASELINE_TREES = 400
BASELINE_THRESHOLD = 0.5
MLFLOW_ENVIRONMENT = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
CLASSIFICATION_COLUMNS = {
    "AUC": "auc",
    "AP": "average_precision",
    "F1": "f1",
    "precision": "precision",
    "recall": "recall",
    "Brier": "brier_score",
    "ECE": "ece",
}
REGRESSION_COLUMNS = {"MAE h": "mae", "RMSE h": "rmse", "NASA score": "nasa_score"}
# The evaluate run logs the reference model it trains beside the candidate as reference_<metric>.
REFERENCE_PREFIX = "reference_"

Frames = tuple[pd.DataFrame, pd.DataFrame]

# NASA C-MAPSS FD003, read in place (never copied into the repository).
# The real data live outside the repository: $PDMFLOW_BENCH_DATA/cmapss_fd003, else the
# checkout's sibling shared/data/ (override with --cmapss-dir).
CMAPSS_FD003 = (
    Path(os.environ.get("PDMFLOW_BENCH_DATA", REPO.parent / "shared/data")) / "cmapss_fd003"
)
CMAPSS_COLUMNS = [
    "unit",
    "cycle",
    *(f"setting_{i}" for i in range(1, 4)),
    *(f"sensor_{i}" for i in range(1, 22)),
]
CMAPSS_ORIGIN = pd.Timestamp("2000-01-01")  # cycle c is read at origin + c hours
CMAPSS_QUICK_ENGINES = 30


def read_cmapss_fd003(folder: Path, config: TenantConfig, quick: bool) -> Frames:
    """(telemetry, failure events) of the FD003 test trajectories, as a user would hand them over.

    One device per engine (`engine_001`...); timestamp = CMAPSS_ORIGIN + cycle hours (one cycle
    = one hour); the config's continuous sensors, each checked not to be constant in the file;
    one failure event per engine at last cycle + its RUL (RUL_FD003.txt, line i = unit i), i.e.
    after its last reading. `quick`: the first 30 engines.
    """
    readings = pd.read_csv(folder / "test_FD003.txt", sep=r"\s+", header=None, names=CMAPSS_COLUMNS)
    remaining = pd.read_csv(folder / "RUL_FD003.txt", header=None, names=["rul"])["rul"]
    units = np.sort(readings["unit"].unique())
    if len(remaining) != len(units) or units[-1] != len(units):
        raise ValueError(
            f"{folder}: {len(units)} engines in test_FD003.txt, {len(remaining)} lines in "
            "RUL_FD003.txt; expected one RUL line per engine, numbered 1..n"
        )
    sensors = config.schema_.continuous_sensors
    constant = [s for s in sensors if readings[s].nunique() < 2]
    if constant:
        raise ValueError(f"{folder}: sensor(s) {', '.join(constant)} constant in FD003")
    left_out = [c for c in CMAPSS_COLUMNS[2:] if c not in sensors and readings[c].nunique() > 1]
    if left_out:
        print(f"  FD003 columns that vary but are unused: {', '.join(left_out)}", file=sys.stderr)
    if quick:
        readings = readings[readings["unit"] <= CMAPSS_QUICK_ENGINES]
    schema = config.schema_
    device = readings["unit"].map(lambda unit: f"engine_{unit:03d}")
    telemetry = pd.DataFrame(
        {
            schema.device_column: device,
            schema.time_column: CMAPSS_ORIGIN + pd.to_timedelta(readings["cycle"], unit="h"),
            **{sensor: readings[sensor].astype(float) for sensor in sensors},
        }
    ).reset_index(drop=True)
    last_cycle = readings.groupby("unit")["cycle"].max()
    failure_cycle = last_cycle + remaining.to_numpy()[last_cycle.index - 1]
    events = pd.DataFrame(
        {
            schema.device_column: [f"engine_{unit:03d}" for unit in failure_cycle.index],
            schema.event_time_column: CMAPSS_ORIGIN
            + pd.to_timedelta(failure_cycle.to_numpy(), unit="h"),
        }
    )
    return telemetry, events


@dataclass(frozen=True)
class DataSet:
    """A tenant config to benchmark, and the smaller source `--quick` uses.

    Synthetic sets are generated from the config (`quick_source` shrinks them); a real data set
    names its `folder` and a `reader` (folder, config, quick) -> frames, and is skipped when the
    folder is absent.
    """

    name: str
    config_path: Path
    quick_source: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None
    reader: Callable[[Path, TenantConfig, bool], Frames] | None = None


DATA_SETS = (
    DataSet("calendar_fleet", REPO / "configs/default.yaml", {"n_devices": 12, "days": 20}),
    DataSet(
        "run_to_failure", REPO / "bench/configs/run_to_failure.yaml", {"n_devices": 30, "days": 6}
    ),
    DataSet("process_log", REPO / "bench/configs/process_log.yaml", {"days": 3}),
    DataSet(
        "run_to_failure_rul",
        REPO / "bench/configs/run_to_failure_rul.yaml",
        {"n_devices": 30, "days": 6},
    ),
    DataSet(
        "component_fleet",
        REPO / "bench/configs/component_fleet.yaml",
        {"n_devices": 10, "days": 30, "mean_days_between_failures": 10},
    ),
    DataSet(
        "cmapss_fd003",
        REPO / "bench/configs/cmapss_fd003.yaml",
        folder=CMAPSS_FD003,
        reader=read_cmapss_fd003,
    ),
    DataSet(
        "cmapss_fd003_rul",
        REPO / "bench/configs/cmapss_fd003_rul.yaml",
        folder=CMAPSS_FD003,
        reader=read_cmapss_fd003,
    ),
)


def regression_scores(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE (hours) and the NASA score."""
    error = np.asarray(predicted, dtype=float) - np.asarray(y_true, dtype=float)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "nasa_score": nasa_score(y_true, predicted),
    }


def smaller(config: TenantConfig, source_overrides: dict[str, Any]) -> TenantConfig:
    """The config with its synthetic source changed (for --quick)."""
    synthetic = config.source.synthetic.model_copy(update=source_overrides)
    source = config.source.model_copy(update={"synthetic": synthetic})
    return config.model_copy(update={"source": source})


def as_dataframe_source(config: TenantConfig) -> TenantConfig:
    """The same tenant reading in-memory frames, as a user of the Python API would."""
    source = config.source.model_copy(update={"kind": "dataframe"})
    return config.model_copy(update={"source": source})


@contextlib.contextmanager
def fresh_tracking_store() -> Iterator[str]:
    """A temp dir holding a new SQLite MLflow store, as the working directory."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="pdmflow-quality-") as tmp:
        for name in MLFLOW_ENVIRONMENT:
            os.environ.pop(name, None)
        uri = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        mlflow.set_tracking_uri(uri)
        os.chdir(tmp)
        try:
            yield uri
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            os.chdir(previous)
            mlflow.set_tracking_uri(None)
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            for name in MLFLOW_ENVIRONMENT:
                os.environ.pop(name, None)


@dataclass
class PipelineResult:
    data_uri: str
    features_uri: str
    metrics: dict[str, float]
    model_uri: str
    released: bool
    failed_gates: list[str]  # "auc 0.7131 (needs >= 0.8)"
    seconds: float


def failed_gate(gate: GateResult) -> str:
    """One failed gate with its numbers, as the note line shows it."""
    value = "missing" if gate.value is None else f"{gate.value:.4g}"
    return f"{gate.name} {value} (needs {gate.comparison} {gate.threshold:g})"


def run_pdmflow(
    config: TenantConfig, frames: tuple[pd.DataFrame, pd.DataFrame], trials: int | None
) -> PipelineResult:
    """The six steps in order, as `main` runs them; the evaluate run's metrics and the verdict."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the steps' summaries are progress, not table
        data_uri = run_ingest(config, frames=frames)
        features_uri = run_features(config, data_uri)
        tune_run_id = run_tune(config, features_uri, trials)
        train_run_id = run_train(config, features_uri, tune_run_id)
        evaluate_run_id = run_evaluate(config, train_run_id)
        try:
            run_promote(config, evaluate_run_id)
            released = True
        except GateFailure as rejected:
            print(f"  promote: {rejected}", file=sys.stderr)
            released = False
    evaluation = mlflow.get_run(evaluate_run_id)
    # promote records every gate's value, bound and verdict in gate_results.json on its run.
    promotion = latest_step_run(config, "promote")
    recorded = mlflow.artifacts.load_dict(f"runs:/{promotion.info.run_id}/gate_results.json")
    gates = [GateResult(**gate) for gate in recorded["gates"]]
    training = mlflow.get_run(train_run_id)
    return PipelineResult(
        data_uri=data_uri,
        features_uri=features_uri,
        # The train run's out-of-fold figures too (validation_*), for the threshold's gap.
        metrics={**training.data.metrics, **evaluation.data.metrics},
        model_uri=evaluation.data.tags["pdmflow.model_uri"],
        released=released,
        failed_gates=[failed_gate(gate) for gate in gates if not gate.passed],
        seconds=time.perf_counter() - start,
    )


def baseline_features(
    telemetry: pd.DataFrame,
    device: str,
    time_column: str,
    continuous: list[str],
    boolean: list[str],
) -> pd.DataFrame:
    """Per device: raw sensors, rolling mean/std over 5/10/20 readings, first differences."""
    frame = telemetry.sort_values([device, time_column]).reset_index(drop=True)
    grouped = frame.groupby(device, sort=False)
    columns: dict[str, pd.Series] = {}
    for sensor in continuous:
        for window in BASELINE_WINDOWS:
            rolling = grouped[sensor].rolling(window, min_periods=1)
            columns[f"{sensor}_mean_{window}"] = rolling.mean().reset_index(level=0, drop=True)
            columns[f"{sensor}_std_{window}"] = rolling.std().reset_index(level=0, drop=True)
        columns[f"{sensor}_diff"] = grouped[sensor].diff()
    features = pd.concat(
        [frame[[device, time_column, *continuous, *boolean]], pd.DataFrame(columns)], axis=1
    )
    features[time_column] = features[time_column].astype("datetime64[ns]")
    features[device] = features[device].astype(str)
    return features


def on_rows(table: pd.DataFrame, features: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The baseline's features on exactly the rows of one of pdmflow's split tables."""
    rows = table[keys].assign(
        **{keys[0]: table[keys[0]].astype(str), keys[1]: table[keys[1]].astype("datetime64[ns]")}
    )
    joined = rows.merge(features, on=keys, how="left", validate="one_to_one")
    return joined.drop(columns=keys)


def run_baseline(
    config: TenantConfig, telemetry: pd.DataFrame, tables: dict[str, pd.DataFrame]
) -> tuple[np.ndarray, np.ndarray]:
    """(test labels, baseline test predictions): LightGBM on the afternoon features."""
    schema = config.schema_
    keys = [schema.device_column, schema.time_column]
    features = baseline_features(
        telemetry, *keys, schema.continuous_sensors, schema.boolean_sensors
    )
    label = label_column(config)
    learn = pd.concat([tables["train"], tables["validation"]], ignore_index=True)
    X_learn, y_learn = on_rows(learn, features, keys), learn[label].to_numpy()
    X_test, y_test = on_rows(tables["test"], features, keys), tables["test"][label].to_numpy()
    if config.task == "classification":
        model = lgb.LGBMClassifier(n_estimators=BASELINE_TREES, random_state=0, verbose=-1)
        model.fit(X_learn, y_learn.astype(int))
        return y_test.astype(int), model.predict_proba(X_test)[:, 1]
    regressor = lgb.LGBMRegressor(n_estimators=BASELINE_TREES, random_state=0, verbose=-1)
    regressor.fit(X_learn, y_learn)
    return y_test, regressor.predict(X_test)


def with_settings(config: TenantConfig, settings: list[str]) -> TenantConfig:
    """The config with `key.path=value` settings applied (values read as YAML), validated as
    load_config validates a file; for comparing a default against its alternatives."""
    raw = config.model_dump(mode="json", by_alias=True)
    for setting in settings:
        key, _, value = setting.partition("=")
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return TenantConfig.model_validate(raw)


def benchmark(
    data_set: DataSet, trials: int | None, quick: bool, settings: list[str] | None = None
) -> list[dict[str, Any]]:
    """The data set's three rows: pdmflow, its reference model, the plain script."""
    config = with_settings(load_config(data_set.config_path), settings or [])
    if data_set.reader is not None:
        assert data_set.folder is not None
        if not data_set.folder.is_dir():
            return [
                {
                    "data set": data_set.name,
                    "model": "pdmflow",
                    "released": "skipped",
                    "note": f"{data_set.name}: skipped, no data at {data_set.folder}",
                }
            ]
        frames = data_set.reader(data_set.folder, config, quick)
    else:
        if quick:
            config = smaller(config, data_set.quick_source)
        frames = read_source(config)  # the generated data a user would hand to the Python API
    config = as_dataframe_source(config)
    print(f"{data_set.name}: {len(frames[0]):,} readings, pdmflow ...", file=sys.stderr)
    with fresh_tracking_store():
        result = run_pdmflow(config, frames, trials)
        tables, _ = read_features(result.features_uri)
        telemetry, _ = read_dataset(result.data_uri)  # validated, exactly what pdmflow used
        label = label_column(config)
        regression = config.task == "regression"
        wanted = REGRESSION_COLUMNS if regression else CLASSIFICATION_COLUMNS
        ours = {key: result.metrics[key] for key in wanted.values()}
        reference = {key: result.metrics.get(REFERENCE_PREFIX + key) for key in wanted.values()}
        print(f"  pdmflow done in {result.seconds:.0f} s; baseline ...", file=sys.stderr)
        y_true, baseline_prediction = run_baseline(config, telemetry, tables)
    if regression:
        theirs = regression_scores(y_true, baseline_prediction)
    else:
        theirs = classification_metrics(y_true, baseline_prediction, BASELINE_THRESHOLD)
        theirs["ece"] = expected_calibration_error(y_true, baseline_prediction)
    test = tables["test"]
    positive_devices = (
        ""
        if regression
        else f" ({test.loc[test[label] == 1, config.schema_.device_column].nunique()} with "
        "positives)"
    )
    note = (
        f"{data_set.name}: test {len(test):,} rows of "
        f"{test[config.schema_.device_column].nunique()} device(s){positive_devices}, "
        + (
            f"mean RUL {test[label].mean():.1f} h"
            if regression
            else f"{test[label].mean():.1%} positive"
        )
        + (
            ""
            if regression
            else f"; pdmflow threshold {result.metrics.get('decision_threshold', np.nan):.3f} "
            f"(precision out-of-fold "
            f"{result.metrics.get('validation_threshold_precision', np.nan):.3f} -> test "
            f"{result.metrics.get('precision', np.nan):.3f})"
        )
        + f", pipeline {result.seconds:.0f} s"
        + (
            ""
            if result.released
            else f"; not released, failed gates: {'; '.join(result.failed_gates) or '?'}"
        )
    )
    return [
        {"data set": data_set.name, "model": "pdmflow", **ours, "released": result.released,
         "note": note},
        {"data set": data_set.name, "model": "reference", **reference, "released": None},
        {"data set": data_set.name, "model": "plain script", **theirs, "released": None},
    ]  # fmt: skip


def format_table(rows: list[dict[str, Any]]) -> str:
    """One markdown table; a metric a row does not have is shown as '-'."""
    metric_columns = {**CLASSIFICATION_COLUMNS, **REGRESSION_COLUMNS}
    header = ["data set", "model", *metric_columns, "released"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [row["data set"], row["model"]]
        for key in metric_columns.values():
            value = row.get(key)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                cells.append("-")
            elif key == "nasa_score":
                cells.append(f"{value:,.0f}")
            elif key in ("mae", "rmse"):
                cells.append(f"{value:.2f}")
            else:  # four places: the models often differ in the third
                cells.append(f"{value:.4f}")
        released = row.get("released")
        if isinstance(released, str):
            cells.append(released)
        else:
            cells.append("-" if released is None else ("yes" if released else "no"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SPREAD_COLUMNS = {"AP": "average_precision", "F1": "f1", "precision": "precision",
                  "recall": "recall", "MAE h": "mae", "RMSE h": "rmse"}  # fmt: skip


def over_splits(
    data_set: DataSet, trials: int | None, quick: bool, settings: list[str], splits: int
) -> list[dict[str, Any]]:
    """`benchmark` on `splits` device splits (seeds from the config's split.seed on); the
    per-split rows, each with its `split seed`."""
    first = with_settings(load_config(data_set.config_path), settings).split.seed
    rows: list[dict[str, Any]] = []
    for seed in range(first, first + splits):
        print(f"{data_set.name}: device split seed {seed}", file=sys.stderr)
        for row in benchmark(data_set, trials, quick, [*settings, f"split.seed={seed}"]):
            rows.append({**row, "split seed": seed})
            # Each split's row as it lands, so a long run shows (and keeps) its progress.
            print(
                f"  split {seed} {row['model']}: "
                + ", ".join(
                    f"{k} {row[k]:.3f}"
                    for k in SPREAD_COLUMNS.values()
                    if isinstance(row.get(k), float)
                )
                + f", released {row.get('released')}"
                + (f"\n    {row['note']}" if row.get("note") else ""),
                file=sys.stderr,
            )
    return rows


def format_spread(rows: list[dict[str, Any]]) -> str:
    """Per data set and model: each metric's mean (min-max) over the splits, and releases."""
    frame = pd.DataFrame(rows)
    header = ["data set", "model", "splits", *SPREAD_COLUMNS, "released"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for (name, model), group in frame.groupby(["data set", "model"], sort=False):
        cells = [name, model, str(len(group))]
        for key in SPREAD_COLUMNS.values():
            column = group[key] if key in group else pd.Series(dtype=float)
            values = pd.to_numeric(column, errors="coerce").dropna()
            places = 2 if key in ("mae", "rmse") else 3
            cells.append(
                "-"
                if values.empty
                else f"{values.mean():.{places}f} ({values.min():.{places}f}-"
                f"{values.max():.{places}f})"
            )
        released = group["released"]
        cells.append(
            f"{int((released == True).sum())} of {len(group)}"  # noqa: E712 (None: not a model)
            if model == "pdmflow"
            else "-"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def quiet() -> None:
    """Keep the libraries' chatter off the terminal; the bench reports progress itself."""
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic", "pdmflow", "lightgbm"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [d.name for d in DATA_SETS]
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(names)}")
    parser.add_argument(
        "--trials", type=int, default=None, help="Optuna trials per tune step (default: config)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data sets and at most 3 trials (a smoke check)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every data set, e.g. tuning.objective=auc (repeatable)",
    )
    parser.add_argument(
        "--splits",
        type=int,
        default=1,
        help="device-split data sets: run N device splits and print the spread over them",
    )
    parser.add_argument(
        "--cmapss-dir",
        type=Path,
        default=CMAPSS_FD003,
        help="folder holding test_FD003.txt and RUL_FD003.txt (read in place)",
    )
    args = parser.parse_args()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"--only: unknown data set {unknown[0]!r} (expected {', '.join(names)})")
    trials = min(args.trials or 3, 3) if args.quick else args.trials
    quiet()
    if args.splits < 1:
        parser.error(f"--splits: at least 1, got {args.splits}")
    rows: list[dict[str, Any]] = []
    spread: list[dict[str, Any]] = []
    for data_set in DATA_SETS:
        if data_set.name not in chosen:
            continue
        if data_set.folder == CMAPSS_FD003:
            data_set = replace(data_set, folder=args.cmapss_dir)
        try:
            by_device = load_config(data_set.config_path).split.by == "device"
            if args.splits > 1 and by_device:
                runs = over_splits(data_set, trials, args.quick, args.set, args.splits)
                spread += runs
                first = runs[0]["split seed"]
                rows += [row for row in runs if row["split seed"] == first]
            else:
                rows += benchmark(data_set, trials, args.quick, args.set)
        except Exception as error:  # one data set failing must not hide the others' results
            traceback.print_exc(file=sys.stderr)
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            rows.append(
                {
                    "data set": data_set.name,
                    "model": "pdmflow",
                    "released": "FAILED",
                    "note": f"{data_set.name}: FAILED ({type(error).__name__}: {reason})",
                }
            )
    size = "quick (small data)" if args.quick else "full"
    print(
        f"pdmflow quality vs its reference and a plain LightGBM script   {size}   "
        f"Optuna trials: {trials or 'config'}   "
        + (f"settings: {' '.join(args.set)}   " if args.set else "")
        + f"python {sys.version.split()[0]}   lightgbm {lgb.__version__}"
    )
    print(format_table(rows))
    print()
    for row in rows:
        if "note" in row:
            print(f"- {row['note']}")
    if spread:
        print()
        print(f"Over {args.splits} device splits (split.seed and the next ones): mean (min-max)")
        print(format_spread(spread))
        print()
        for row in spread:
            if "note" in row:
                print(f"- seed {row['split seed']}: {row['note']}")


if __name__ == "__main__":
    main()
