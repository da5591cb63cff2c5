"""Robustness of a model to degraded telemetry: sensor noise and dead (frozen) sensors.

Each perturbation changes the raw telemetry of the test devices, the features are rebuilt by
the training code (`build_features`) and the model scores the very same test rows again:

- `noise_<k>pct`: Gaussian noise with standard deviation k % of the sensor's standard deviation
  (over all the telemetry given) is added to every continuous sensor on every reading of the
  test devices that the test rows' features can see (seeded; boolean sensors are left alone).
- `frozen:<sensor>`: a dead sensor. On each test device, from the time of its first test row on,
  the sensor holds the last value it read before that time (its first value in the test period
  when it read none before). One continuous sensor at a time.

`change` says how much worse the model gets: for AUC, baseline - perturbed (an AUC drop); for
MAE, perturbed - baseline (an MAE increase). Positive is worse either way. The baseline (`none`)
is the model on features rebuilt from the unperturbed telemetry the same way.

Cheap by construction: only the test devices are rebuilt, only the features the model reads (a
spec reduced with `FeatureSpec.with_features` makes the builder compute only the rolling
statistics it needs), and each device's telemetry is cropped to what its test rows' features
can see (`cropped_test_telemetry`). Which rows a rebuild keeps depends on reading times only,
never on sensor values, so the test rows are located once and reused for every perturbation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, roc_auc_score

from pdmflow.errors import DataValidationError
from pdmflow.evaluation.findings import Findings
from pdmflow.features.builder import FeatureSpec, build_features

Metric = Literal["auc", "mae"]
TABLE_COLUMNS = ["perturbation", "sensor", "value", "change", "rows"]
BASELINE = "none"
FROZEN_PREFIX = "frozen:"
# Readings kept before the look-back edge besides `min_readings` and the spectral window: the
# reading a lag or window edge falls on, the two that second differences read, and one spare.
_PAD_READINGS = 4


def lookback(spec: FeatureSpec) -> pd.Timedelta:
    """How far before a reading the telemetry can change a feature `spec` builds for it.

    `spec.history` (the longest lag or window), or `time_since_cap_hours` when that is longer and
    the model reads `hours_since_maintenance`: that feature looks back to the sensor's last 'on'
    reading however old it is, but anything older than the cap gives the cap, so the cap bounds
    it. `hours_since_failure` reads the failure events (passed whole) and the reading's own time
    only, so cropping telemetry never changes it.
    """
    span = spec.history
    if spec.maintenance_sensor and "hours_since_maintenance" in spec.feature_names:
        span = max(span, pd.Timedelta(hours=spec.time_since_cap_hours))
    return span


def _first_test_times(spec: FeatureSpec, test_keys: pd.DataFrame) -> pd.Series:
    """Time of each test device's first test row (datetime64[ns]), indexed by device."""
    times = pd.Series(_as_ns(test_keys[spec.time_column]))
    return times.groupby(test_keys[spec.device_column].to_numpy(), sort=False).min()


def _as_ns(times: pd.Series) -> np.ndarray:
    return pd.to_datetime(times).to_numpy(dtype="datetime64[ns]")


def _device_starts(codes: np.ndarray) -> np.ndarray:
    """Per row, the row number of its device's first row (rows grouped by device)."""
    rows = np.arange(len(codes))
    first = np.r_[True, codes[1:] != codes[:-1]] if len(codes) else np.array([], dtype=bool)
    return np.maximum.accumulate(np.where(first, rows, 0))


def cropped_test_telemetry(
    telemetry: pd.DataFrame, spec: FeatureSpec, test_keys: pd.DataFrame
) -> pd.DataFrame:
    """The test devices' telemetry, cropped to the readings their test rows' features can see.

    Cropping rule, per test device with first test time t0: keep the last reading at or before
    t0 - `lookback(spec)`, `_PAD_READINGS` + `spec.min_readings` (+ `spec.spectral_window` when
    spectral features are built) readings before it, and every reading after it. Every window
    (t - w, t] and lag edge t - lag of a test row (t >= t0; w, lag <= history) then lies inside
    the kept span, and so do the last `spectral_window` readings and the two readings that
    differences read; the device still has a full history at t0 (its first kept reading lies at
    least `history` before it); `hours_since_maintenance` still sees every 'on' reading younger
    than its cap. A device with no reading at or before t0 - lookback is kept whole. The test
    rows' rebuilt features therefore equal the uncropped ones up to the float rounding of
    pandas' running-sum rolling kernels (below 1e-6; tests/test_robustness_bootstrap.py).
    `telemetry` is validated: sorted by device then time. The index is kept.
    """
    first_test = _first_test_times(spec, test_keys)
    rows = telemetry[telemetry[spec.device_column].isin(first_test.index)]
    codes = first_test.index.get_indexer(rows[spec.device_column].to_numpy())
    times = rows[spec.time_column].to_numpy(dtype="datetime64[ns]")
    edge = (first_test - lookback(spec)).to_numpy(dtype="datetime64[ns]")
    pad = _PAD_READINGS + spec.min_readings
    if spec.spectral_sensors:
        pad += spec.spectral_window
    device_start = _device_starts(codes)
    starts = np.flatnonzero(device_start == np.arange(len(codes)))
    keep = np.zeros(len(rows), dtype=bool)
    for begin, end in zip(starts, np.r_[starts[1:], len(codes)], strict=True):
        at_edge = begin + np.searchsorted(times[begin:end], edge[codes[begin]], side="right") - 1
        keep[max(begin, at_edge - pad) if at_edge >= begin else begin : end] = True
    return rows[keep]


def _test_positions(
    features_index: pd.Index, telemetry: pd.DataFrame, spec: FeatureSpec, test_keys: pd.DataFrame
) -> np.ndarray:
    """Row positions, in a feature table rebuilt from `telemetry`, of the test rows in order.

    Raises DataValidationError when a test row has no rebuilt feature row (no reading at its
    (device, time), or too little history before it); ValueError (pandas) when a (device, time)
    matches more than one reading.
    """
    keys = [spec.device_column, spec.time_column]
    readings = pd.DataFrame(
        {
            spec.device_column: telemetry[spec.device_column].to_numpy(),
            spec.time_column: _as_ns(telemetry[spec.time_column]),
            "_row": telemetry.index.to_numpy(),
        }
    )
    wanted = pd.DataFrame(
        {
            spec.device_column: test_keys[spec.device_column].to_numpy(),
            spec.time_column: _as_ns(test_keys[spec.time_column]),
        }
    )
    joined = wanted.merge(readings, on=keys, how="left", validate="many_to_one")
    row = joined["_row"].to_numpy()
    found = ~pd.isna(row)
    positions = np.full(len(wanted), -1, dtype=np.int64)
    positions[found] = features_index.get_indexer(row[found].astype(features_index.dtype))
    missing = np.flatnonzero(positions < 0)
    if len(missing):
        first = wanted.iloc[missing[0]]
        raise DataValidationError(
            f"robustness: {len(missing)} of {len(wanted)} test rows have no rebuilt features, "
            f"e.g. device '{first[spec.device_column]}' at {first[spec.time_column]} (no reading "
            f"there, or less than {spec.history} of history before it)"
        )
    return positions


def _score(metric: Metric, y_true: np.ndarray, prediction: np.ndarray) -> float:
    if metric == "auc":
        return float(roc_auc_score(y_true, prediction))
    return float(mean_absolute_error(y_true, prediction))


def _frozen_source(frame: pd.DataFrame, spec: FeatureSpec, first_test: pd.Series) -> np.ndarray:
    """Per reading of `frame`, the row (position) whose value a dead sensor shows there.

    Readings at or after the device's first test time t0 take the last reading before t0, or
    the device's first reading at or after t0 when none lies before; others keep their own.
    """
    device = frame[spec.device_column].to_numpy()
    times = frame[spec.time_column].to_numpy(dtype="datetime64[ns]")
    codes = first_test.index.get_indexer(device)
    after = times >= first_test.to_numpy(dtype="datetime64[ns]")[codes]
    rows = np.arange(len(frame))
    device_start = _device_starts(codes)
    # `after` is False then True within a device (sorted by time): mark where it turns True.
    turns = after & ((rows == device_start) | ~np.r_[False, after[:-1]])
    first_after = np.maximum.accumulate(np.where(turns, rows, 0))
    before = np.where(first_after > device_start, first_after - 1, first_after)
    return np.where(after, before, rows)


def _noise_name(level: float) -> str:
    return f"noise_{level * 100:g}pct"


def robustness_table(
    telemetry: pd.DataFrame,
    events: pd.DataFrame | None,
    spec: FeatureSpec,
    test_keys: pd.DataFrame,
    y_true: np.ndarray,
    predict: Callable[[pd.DataFrame], np.ndarray],
    metric: Metric = "auc",
    noise_levels: Iterable[float] = (0.05, 0.10),
    seed: int = 0,
) -> pd.DataFrame:
    """The model's metric on the test rows under each perturbation (module docstring).

    `telemetry` and `events` are the raw data the test features were built from (validated,
    sorted by device then time); `spec` is the model's spec (reduced to the features it reads);
    `test_keys` holds the (device, time) of the test rows in the order of `y_true`; `predict`
    takes a frame of `spec.feature_names` columns (those rows, that order) and returns scores
    (AUC: probabilities or any score; MAE: predicted values).

    One row per perturbation, in order `none`, `noise_<k>pct` per level, `frozen:<sensor>` per
    continuous sensor, with columns `perturbation`, `sensor` (the frozen sensor, or "all"),
    `value` (AUC or MAE), `change` (positive is worse: AUC baseline - value, MAE value -
    baseline) and `rows` (test rows scored). Raises DataValidationError when a test row gets no
    rebuilt features.
    """
    if metric not in ("auc", "mae"):
        raise ValueError(f"metric must be 'auc' or 'mae', got {metric!r}")
    y_true = np.asarray(y_true)
    if len(y_true) != len(test_keys):
        raise ValueError(f"y_true has {len(y_true)} values for {len(test_keys)} test rows")
    first_test = _first_test_times(spec, test_keys)
    cropped = cropped_test_telemetry(telemetry, spec, test_keys)
    columns = list(dict.fromkeys([*spec.input_columns, *filter(None, [spec.maintenance_sensor])]))
    # A fresh RangeIndex: rebuilt rows are found by position whatever the telemetry's index.
    base = (
        cropped[columns]
        .reset_index(drop=True)
        .astype({sensor: "float64" for sensor in spec.continuous_sensors})
    )
    device_events = (
        None if events is None else events[events[spec.device_column].isin(first_test.index)]
    )
    positions: np.ndarray | None = None
    kept_index: pd.Index | None = None

    def score(frame: pd.DataFrame) -> float:
        nonlocal positions, kept_index
        features = build_features(frame, spec, device_events)
        if positions is None:
            positions = _test_positions(features.index, frame, spec, test_keys)
            kept_index = features.index
        elif not features.index.equals(kept_index):  # depends on times only: cannot happen
            raise DataValidationError("robustness: a perturbation changed which rows are kept")
        rows = features[spec.feature_names].iloc[positions].reset_index(drop=True)
        return _score(metric, y_true, np.asarray(predict(rows)).ravel())

    records: list[tuple[str, str, float]] = [(BASELINE, "all", score(base))]
    spread = telemetry[spec.continuous_sensors].astype("float64").std().to_numpy()
    sensor_values = base[spec.continuous_sensors].to_numpy()
    for i, level in enumerate(noise_levels):
        rng = np.random.default_rng([seed, i])
        noise = rng.standard_normal(sensor_values.shape) * (float(level) * spread)
        frame = base.copy()
        frame[spec.continuous_sensors] = sensor_values + noise
        records.append((_noise_name(float(level)), "all", score(frame)))
    source = _frozen_source(base, spec, first_test)
    for sensor in spec.continuous_sensors:
        frame = base.copy()
        frame[sensor] = base[sensor].to_numpy()[source]
        records.append((f"{FROZEN_PREFIX}{sensor}", sensor, score(frame)))

    table = pd.DataFrame(records, columns=["perturbation", "sensor", "value"])
    baseline = table["value"].iat[0]
    table["change"] = baseline - table["value"] if metric == "auc" else table["value"] - baseline
    table["rows"] = len(test_keys)
    return table[TABLE_COLUMNS]


def robustness_summary(table: pd.DataFrame, metric: Metric) -> dict[str, float | str]:
    """Headline numbers of a `robustness_table` (positive changes are worse).

    - `robustness_worst_auc_drop` (MAE: `robustness_worst_mae_increase`): the largest change of
      any perturbation;
    - `robustness_noise_10pct_auc_drop` (MAE: `robustness_noise_10pct_mae_increase`): the change
      under 10 % noise (NaN when that level was not run);
    - `robustness_dead_sensor_auc_drop` (MAE: `robustness_dead_sensor_mae_increase`): the
      largest change with one sensor frozen (its worst sensor; NaN when none was frozen);
    - `worst`: the perturbation with the largest change (e.g. "frozen:vibration"), for a tag;
    - `worst_sensor`: the sensor whose freezing hurts most ("" when no sensor was frozen).
    """
    if metric not in ("auc", "mae"):
        raise ValueError(f"metric must be 'auc' or 'mae', got {metric!r}")
    suffix = "auc_drop" if metric == "auc" else "mae_increase"
    perturbed = table[table["perturbation"] != BASELINE]
    if perturbed.empty:
        raise ValueError("the robustness table holds no perturbation")
    worst = perturbed.loc[perturbed["change"].idxmax()]
    noise = perturbed.loc[perturbed["perturbation"] == _noise_name(0.10), "change"]
    frozen = perturbed[perturbed["perturbation"].str.startswith(FROZEN_PREFIX)]
    return {
        f"robustness_worst_{suffix}": float(worst["change"]),
        f"robustness_noise_10pct_{suffix}": float(noise.iat[0]) if len(noise) else float("nan"),
        f"robustness_dead_sensor_{suffix}": (
            float(frozen["change"].max()) if len(frozen) else float("nan")
        ),
        "worst": str(worst["perturbation"]),
        "worst_sensor": (
            str(frozen.loc[frozen["change"].idxmax(), "sensor"]) if len(frozen) else ""
        ),
    }


def robustness_findings(
    telemetry: pd.DataFrame,
    events: pd.DataFrame,
    spec: FeatureSpec,
    test: pd.DataFrame,
    truth: np.ndarray,
    predict: Callable[[pd.DataFrame], np.ndarray],
    metric: Metric,
    noise_levels: Iterable[float],
    seed: int,
) -> tuple[Findings, pd.DataFrame]:
    """(the headline `robustness_*` metrics, the worst perturbation and sensor as tags, the
    table's rows as the report; the table itself) of the model `predict` (on feature frames)."""
    table = robustness_table(
        telemetry,
        events if len(events) else None,
        spec,
        test[[spec.device_column, spec.time_column]],
        truth,
        predict,
        metric=metric,
        noise_levels=noise_levels,
        seed=seed,
    )
    summary = robustness_summary(table, metric)
    found = Findings(
        metrics={k: v for k, v in summary.items() if k.startswith("robustness_")},
        tags={
            "pdmflow.robustness_worst": summary["worst"],
            "pdmflow.robustness_worst_sensor": summary["worst_sensor"],
        },
        report=table.to_dict(orient="records"),
    )
    return found, table
