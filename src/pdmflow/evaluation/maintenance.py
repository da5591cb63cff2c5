"""What a maintenance planner reads: lead time before failures, false alarms, per-device quality.

Pure functions over the test period's scored rows (one row per device and reading); nothing is
logged here. Times are hours unless a name says otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import precision_score, recall_score, roc_auc_score

HOUR = np.timedelta64(1, "h")
DAY_HOURS = 24.0


def _require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing column(s) {missing}; it has {list(frame.columns)}")


def _alert_flags(frame: pd.DataFrame, alert_column: str) -> np.ndarray:
    alerts = frame[alert_column]
    if alerts.isna().any():
        raise ValueError(f"alert column {alert_column!r} holds missing values")
    return alerts.astype(bool).to_numpy()


def sampling_interval_hours(frame: pd.DataFrame, device_column: str, time_column: str) -> float:
    """The frame's sampling interval: the median positive gap between consecutive rows of a device.

    Pooled over all devices. NaN when no device has two rows at different times.
    """
    ordered = frame.sort_values([device_column, time_column], kind="stable")
    times = pd.to_datetime(ordered[time_column])
    gaps = times.groupby(ordered[device_column].to_numpy(), sort=False).diff().dropna()
    hours = gaps.to_numpy(dtype="timedelta64[ns]") / HOUR
    hours = hours[hours > 0]
    return float(np.median(hours)) if hours.size else math.nan


def alert_outcomes(
    frame: pd.DataFrame,
    device_column: str,
    time_column: str,
    alert_column: str,
    horizon_hours: float,
    events: pd.DataFrame | None = None,
    event_time_column: str = "event_time",
    label_column: str | None = None,
) -> dict[str, float]:
    """Failures caught, lead time and false alarms of an alerting rule over the test period.

    `frame` holds one row per device and reading with a truthy `alert_column` (the model alerted
    at that reading); rows are taken per device in time order. H = `horizon_hours`.

    Failures in the test period:
    - with `events` (rows of `device_column` and `event_time_column`): the distinct event times
      of devices present in `frame` that lie after the device's first row in `frame` and within
      H of some row, i.e. at least one row t with event - H <= t < event exists (the rows the
      failure label marks 1). The failure's *window* is those rows. It is caught when a row of
      the window alerts; lead time = event time - the first alerting row of the window.
    - without `events` (a tenant with a target column; `label_column` is then required): a
      failure is a maximal run of consecutive label == 1 rows of a device, which is its window.
      Its time is the time of the first row after the run, or the run's last row when none
      follows (the lead time is then a lower bound). Caught and lead time as above. Two failures
      closer than H merge into one run here, while `events` counts them apart.

    A false alarm is an alert *episode* starting outside every failure window: an alerting row
    whose previous row of the same device did not alert (or the device's first row, alerting),
    lying in no failure's window of that device. An episode that starts before a window and runs
    into it counts as a false alarm and also catches the failure.

    Device-days: per device, (last - first timestamp of its rows in `frame`) + one sampling
    interval, in days, summed over devices. The sampling interval is `sampling_interval_hours`
    (the median positive gap between consecutive rows of a device, pooled over the frame), so
    each reading stands for one interval: 48 hourly rows are 2 device-days and a single-row
    device counts one interval, not zero. NaN when no device has two rows at different times.

    Returns `failures_in_test` (int), `failures_caught` (int), `failure_catch_rate` (caught /
    failures; NaN without failures), `lead_time_median_hours` and `lead_time_mean_hours` (over
    caught failures; NaN when none is caught), `false_alarms` (int), `device_days` and
    `false_alarms_per_device_day` (false_alarms / device_days).
    """
    if events is None and label_column is None:
        raise ValueError("alert_outcomes needs failure events or a label_column to find failures")
    columns = [device_column, time_column, alert_column]
    if events is None:
        columns.append(str(label_column))
    _require_columns(frame, columns, "the scored frame")
    if events is not None:
        _require_columns(events, [device_column, event_time_column], "the events frame")

    ordered = frame.sort_values([device_column, time_column], kind="stable")
    all_times = pd.to_datetime(ordered[time_column]).to_numpy(dtype="datetime64[ns]")
    all_alerts = _alert_flags(ordered, alert_column)
    all_labels = (
        (ordered[label_column] == 1).to_numpy() if events is None else np.zeros(0, dtype=bool)
    )
    event_times: dict[object, np.ndarray] = {}
    if events is not None:
        event_column = pd.to_datetime(events[event_time_column]).to_numpy(dtype="datetime64[ns]")
        for device, rows in events.groupby(device_column, sort=False).indices.items():
            event_times[device] = np.unique(event_column[rows])
    horizon = np.timedelta64(int(round(horizon_hours * 3600 * 1e9)), "ns")

    interval = sampling_interval_hours(frame, device_column, time_column)
    failures = 0
    lead_times: list[float] = []
    false_alarms = 0
    span_hours = 0.0
    for device, rows in ordered.groupby(device_column, sort=False).indices.items():
        times = all_times[rows]
        alerts = all_alerts[rows]
        in_window = np.zeros(len(rows), dtype=bool)
        # (first row of the window, end of the window exclusive, failure time) per failure.
        windows: list[tuple[int, int, np.datetime64]] = []
        if events is not None:
            for event in event_times.get(device, np.array([], dtype="datetime64[ns]")):
                start = int(np.searchsorted(times, event - horizon, side="left"))
                stop = int(np.searchsorted(times, event, side="left"))
                if stop > start:
                    windows.append((start, stop, event))
        else:
            labels = all_labels[rows]
            previous = np.concatenate([[False], labels[:-1]])
            following = np.concatenate([labels[1:], [False]])
            starts = np.flatnonzero(labels & ~previous)
            ends = np.flatnonzero(labels & ~following)
            for start, end in zip(starts, ends, strict=True):
                failure_time = times[end + 1] if end + 1 < len(times) else times[end]
                windows.append((int(start), int(end) + 1, failure_time))
        for start, stop, failure_time in windows:
            failures += 1
            in_window[start:stop] = True
            window_alerts = alerts[start:stop]
            if window_alerts.any():
                first_alert = start + int(np.argmax(window_alerts))
                lead_times.append(float((failure_time - times[first_alert]) / HOUR))
        rising = alerts & ~np.concatenate([[False], alerts[:-1]])
        false_alarms += int(np.sum(rising & ~in_window))
        span_hours += float((times[-1] - times[0]) / HOUR) + interval

    caught = len(lead_times)
    device_days = span_hours / DAY_HOURS if len(ordered) else 0.0
    return {
        "failures_in_test": failures,
        "failures_caught": caught,
        "failure_catch_rate": caught / failures if failures else math.nan,
        "lead_time_median_hours": float(np.median(lead_times)) if caught else math.nan,
        "lead_time_mean_hours": float(np.mean(lead_times)) if caught else math.nan,
        "false_alarms": false_alarms,
        "device_days": device_days,
        "false_alarms_per_device_day": (
            false_alarms / device_days if device_days > 0 else math.nan
        ),
    }


def per_device_metrics(
    frame: pd.DataFrame, device_column: str, label: str, probability: str, alert: str
) -> pd.DataFrame:
    """One row per device of a failure classifier's test rows (`label`, `probability`, `alert`
    name columns of `frame`: 0/1 truth, score in [0, 1], 0/1 or bool alert).

    Columns: `device`; `rows`; `failure_rows` (rows labelled 1); `auc` (ROC AUC, NaN when the
    device has one class only); `precision` and `recall` of the alerts (0 when undefined, so a
    device without failure rows has recall 0: read it with `failure_rows`); `alerts` (alerting
    rows); `false_positive_rate` (share of the device's label-0 rows that alert, NaN without
    such rows); `brier` (mean squared difference of probability and label); `mean_probability`.
    Sorted by device.
    """
    _require_columns(frame, [device_column, label, probability, alert], "the scored frame")
    records = []
    for device, part in frame.groupby(device_column, sort=True):
        y_true = part[label].to_numpy(dtype=float).astype(int)
        score = part[probability].to_numpy(dtype=float)
        alerted = _alert_flags(part, alert).astype(int)
        negatives = y_true == 0
        records.append(
            {
                "device": device,
                "rows": len(part),
                "failure_rows": int(y_true.sum()),
                "auc": (
                    float(roc_auc_score(y_true, score)) if len(np.unique(y_true)) == 2 else math.nan
                ),
                "precision": float(precision_score(y_true, alerted, zero_division=0)),
                "recall": float(recall_score(y_true, alerted, zero_division=0)),
                "alerts": int(alerted.sum()),
                "false_positive_rate": (
                    float(np.mean(alerted[negatives])) if negatives.any() else math.nan
                ),
                "brier": float(np.mean((score - y_true) ** 2)),
                "mean_probability": float(np.mean(score)),
            }
        )
    return pd.DataFrame.from_records(
        records,
        columns=[
            "device",
            "rows",
            "failure_rows",
            "auc",
            "precision",
            "recall",
            "alerts",
            "false_positive_rate",
            "brier",
            "mean_probability",
        ],
    )


def per_device_regression(
    frame: pd.DataFrame, device_column: str, label: str, predicted: str
) -> pd.DataFrame:
    """One row per device of a remaining-useful-life model's test rows (`label` and `predicted`
    name columns of `frame`, hours).

    Columns: `device`, `rows`, `mae`, `rmse`, `bias` (mean of predicted - true: > 0 the model
    says the device lives longer than it does, the costly direction). Sorted by device.
    """
    _require_columns(frame, [device_column, label, predicted], "the scored frame")
    records = []
    for device, part in frame.groupby(device_column, sort=True):
        error = part[predicted].to_numpy(dtype=float) - part[label].to_numpy(dtype=float)
        records.append(
            {
                "device": device,
                "rows": len(part),
                "mae": float(np.mean(np.abs(error))),
                "rmse": float(np.sqrt(np.mean(error**2))),
                "bias": float(np.mean(error)),
            }
        )
    return pd.DataFrame.from_records(records, columns=["device", "rows", "mae", "rmse", "bias"])


def worst_devices(table: pd.DataFrame, n: int = 5) -> list[dict]:
    """The `n` worst devices of a `per_device_metrics` or `per_device_regression` table, worst
    first, as records.

    Classifier table: devices with failure rows come first (a missed failure is the costly
    error), by recall ascending, then Brier score descending; then devices without failure rows,
    by false-positive rate (share of their rows that alert) descending, then Brier descending.
    Regression table (it has an `mae` column and no `recall`): by MAE descending, then RMSE
    descending. Remaining ties go by device name.
    """
    if "recall" in table.columns:
        has_failures = table["failure_rows"] > 0
        ranked = table.assign(
            _tier=np.where(has_failures, 0, 1),
            # Within the first tier lower recall is worse; within the second, higher FP rate.
            _key=np.where(has_failures, table["recall"], -table["false_positive_rate"].fillna(0)),
            _device=table["device"].astype(str),
        ).sort_values(
            ["_tier", "_key", "brier", "_device"],
            ascending=[True, True, False, True],
            kind="stable",
        )
    elif "mae" in table.columns:
        ranked = table.assign(_device=table["device"].astype(str)).sort_values(
            ["mae", "rmse", "_device"], ascending=[False, False, True], kind="stable"
        )
    else:
        raise ValueError(
            "worst_devices needs a per_device_metrics (recall) or per_device_regression (mae) "
            f"table; got columns {list(table.columns)}"
        )
    kept = ranked.head(n)[list(table.columns)]
    return kept.to_dict(orient="records")
