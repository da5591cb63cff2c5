"""The rows monitoring compares: the training period, the newest window, and the readings
labelled since the Production model's data ended; and the model's accuracy on the latter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, precision_score, recall_score, roc_auc_score

from pdmflow.config import TenantConfig
from pdmflow.data.labels import make_labels
from pdmflow.features.builder import FeatureSpec, build_features


@dataclass(frozen=True)
class RecentRows:
    """Raw readings and feature rows of the newest window, and labelled rows since `data_end`."""

    window_start: pd.Timestamp
    window_end: pd.Timestamp
    window_readings: pd.DataFrame
    window_features: pd.DataFrame
    # Feature rows newer than data_end whose label is known, with the label column.
    labelled: pd.DataFrame


def training_period(
    dataset: pd.DataFrame, train_table: pd.DataFrame, device_column: str, time_column: str
) -> pd.DataFrame:
    """Raw readings of the train split: its devices, from its first to its last reading
    (a calendar period for split.by time, whole devices for split.by device)."""
    times = train_table[time_column]
    inside = dataset[device_column].isin(set(train_table[device_column])) & dataset[
        time_column
    ].between(times.min(), times.max())
    return dataset[inside]


def recent_rows(
    telemetry: pd.DataFrame,
    events: pd.DataFrame,
    config: TenantConfig,
    spec: FeatureSpec,
    label: str,
    data_end: pd.Timestamp,
) -> RecentRows:
    """The last `monitoring.window_days` of `telemetry` (validated, the whole source) and the
    rows after `data_end` (the end of the model's data) whose label is known by now.

    Features and labels are computed over the whole history, as the features step does, so
    lags, spectral windows and times since failure or maintenance are exactly as in training.
    """
    time_column = spec.time_column
    times = telemetry[time_column]
    window_end = times.max()
    window_start = window_end - pd.Timedelta(days=config.monitoring.window_days)
    features = build_features(telemetry, spec, events)
    labels = make_labels(telemetry, events, config, label)[label]
    features[label] = labels.loc[features.index].to_numpy()
    labelled = features[(features[time_column] > data_end) & features[label].notna()]
    return RecentRows(
        window_start=window_start,
        window_end=window_end,
        window_readings=telemetry[times > window_start],
        window_features=features[features[time_column] > window_start],
        labelled=labelled.reset_index(drop=True),
    )


def recent_performance(
    task: str, truth: np.ndarray, prediction: np.ndarray, threshold: float | None
) -> tuple[dict[str, float], list[str]]:
    """The model's metrics on recently labelled rows, and notes on what could not be computed.

    Classification: AUC (both classes needed), precision (at least one alert needed) and recall
    (at least one failure needed) at the model's decision threshold. Regression: MAE in hours.
    """
    metrics: dict[str, float] = {"recent_labelled_rows": float(len(truth))}
    notes: list[str] = []
    if not len(truth):
        notes.append("no rows labelled since the model's data ended")
        return metrics, notes
    if task == "regression":
        metrics["production_mae_recent"] = float(mean_absolute_error(truth, prediction))
        return metrics, notes
    truth = truth.astype(int)
    alerts = prediction >= float(threshold if threshold is not None else 0.5)
    if len(np.unique(truth)) == 2:
        metrics["production_auc_recent"] = float(roc_auc_score(truth, prediction))
    else:
        notes.append(f"no AUC: the {len(truth)} recently labelled rows hold one class only")
    if alerts.any():
        metrics["production_precision_recent"] = float(precision_score(truth, alerts))
    else:
        notes.append("no precision: the model raised no alert on the recently labelled rows")
    if truth.any():
        metrics["production_recall_recent"] = float(recall_score(truth, alerts))
    else:
        notes.append("no recall: no failure among the recently labelled rows")
    return metrics, notes
