"""Maintenance metrics (lead time, false alarms, per-device tables), the fixed operating points of
`classification_metrics`, RUL bucket errors and the score-distribution plot, on hand-made rows.

Expected numbers are written out with the arithmetic that produces them.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer

from pdmflow.evaluation.maintenance import (
    alert_outcomes,
    per_device_metrics,
    per_device_regression,
    worst_devices,
)
from pdmflow.evaluation.metrics import (
    classification_metrics,
    precision_at_top_percent,
    rul_bucket_errors,
)
from pdmflow.evaluation.plots import score_distribution

START = pd.Timestamp("2024-01-01 00:00")
HORIZON = 24.0


def hourly(device: str, hours: int, alert_hours: list[int], failure_hours: range) -> pd.DataFrame:
    """`hours` hourly rows of one device from START; alert and label 1 at the given hours."""
    offsets = np.arange(hours)
    return pd.DataFrame(
        {
            "device": device,
            "timestamp": START + pd.to_timedelta(offsets, unit="h"),
            "alert": np.isin(offsets, alert_hours),
            "label": np.isin(offsets, list(failure_hours)).astype(float),
        }
    )


# Device A: 48 hourly rows (t = 0..47), fails at t = 40; H = 24 -> window t = 16..39.
#   Alerts at t = 2 (an episode outside the window: false alarm) and t = 35..42 (one episode,
#   rising at 35 inside the window: caught, lead time 40 - 35 = 5 h; it runs past the failure
#   without starting a new episode).
# Device B: 72 hourly rows (t = 0..71), fails at t = 60 -> window t = 36..59, no alert there:
#   missed. Alerts at t = 10..12: one episode outside the window, a false alarm.
# Device C: a single row at t = 0, no alert.
# Failures 2, caught 1 -> catch rate 0.5, median (and mean) lead time 5 h. False alarms 2.
# Sampling interval 1 h (every gap). Device-days: A 47 h + 1 h = 48 h, B 71 + 1 = 72 h,
# C 0 + 1 = 1 h -> 121 h = 121/24 days; false alarms per device-day = 2 / (121/24) = 48/121.
FRAME = pd.concat(
    [
        hourly("A", 48, [2, *range(35, 43)], range(16, 40)),
        hourly("B", 72, [10, 11, 12], range(36, 60)),
        hourly("C", 1, [], range(0)),
    ],
    ignore_index=True,
).sample(frac=1.0, random_state=0)  # row order must not matter
EVENTS = pd.DataFrame(
    {
        "device": ["A", "B", "A", "A", "Z"],
        "event_time": [
            START + pd.Timedelta(hours=40),
            START + pd.Timedelta(hours=60),
            START + pd.Timedelta(hours=100),  # after A's rows end by more than H: not in test
            START - pd.Timedelta(hours=5),  # before A's first row: not in test
            START + pd.Timedelta(hours=10),  # device Z has no rows: not in test
        ],
    }
)
EXPECTED_OUTCOMES = {
    "failures_in_test": 2,
    "failures_caught": 1,
    "failure_catch_rate": 0.5,
    "lead_time_median_hours": 5.0,
    "lead_time_mean_hours": 5.0,
    "false_alarms": 2,
    "device_days": 121 / 24,
    "false_alarms_per_device_day": 48 / 121,
}


def assert_outcomes(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-9), key


def test_alert_outcomes_with_events_on_a_two_device_case():
    outcomes = alert_outcomes(
        FRAME,
        "device",
        "timestamp",
        "alert",
        HORIZON,
        events=EVENTS,
        event_time_column="event_time",
    )
    assert_outcomes(outcomes, EXPECTED_OUTCOMES)
    assert isinstance(outcomes["failures_in_test"], int)
    assert isinstance(outcomes["false_alarms"], int)


def test_alert_outcomes_from_label_runs_match_the_events():
    # Label 1 on A's t = 16..39 and B's t = 36..59; the first rows after the runs are t = 40 and
    # t = 60, the failure times: the same failures, lead time and false alarms.
    outcomes = alert_outcomes(FRAME, "device", "timestamp", "alert", HORIZON, label_column="label")
    assert_outcomes(outcomes, EXPECTED_OUTCOMES)


def test_label_run_at_the_end_of_the_rows_fails_at_its_last_row():
    # 10 hourly rows, label 1 on t = 5..9 (no row follows: failure time t = 9), alert at t = 7
    # -> lead 2 h. A second device alerts throughout with label 0: one false alarm (one
    # episode); device-days (9 + 1 + 9 + 1) h / 24 = 20/24.
    frame = pd.concat(
        [hourly("D", 10, [7], range(5, 10)), hourly("E", 10, list(range(10)), range(0))]
    )
    outcomes = alert_outcomes(frame, "device", "timestamp", "alert", 5.0, label_column="label")
    assert outcomes["failures_in_test"] == 1
    assert outcomes["lead_time_median_hours"] == pytest.approx(2.0)
    assert outcomes["false_alarms"] == 1
    assert outcomes["false_alarms_per_device_day"] == pytest.approx(1 / (20 / 24), abs=1e-9)


def test_alert_outcomes_without_failures_are_nan_not_zero():
    frame = hourly("A", 5, [], range(0))
    outcomes = alert_outcomes(frame, "device", "timestamp", "alert", 2.0, label_column="label")
    assert outcomes["failures_in_test"] == 0
    assert math.isnan(outcomes["failure_catch_rate"])
    assert math.isnan(outcomes["lead_time_median_hours"])
    assert outcomes["false_alarms_per_device_day"] == 0.0


def test_alert_outcomes_needs_events_or_labels():
    with pytest.raises(ValueError, match="label_column"):
        alert_outcomes(FRAME, "device", "timestamp", "alert", HORIZON)


# Ten rows, five failing, scores descending. Alerting at probability >= s for each score s:
#   s     TP FP  precision  recall
#   0.95  1  0   1          0.2
#   0.85  2  0   1          0.4
#   0.75  2  1   2/3        0.4
#   0.70  3  1   3/4        0.6   <- the fixed threshold 0.7 (inclusive): F1 = 6/(6+1+2) = 2/3
#   0.65  3  2   3/5        0.6
#   0.55  4  2   2/3        0.8   <- decision threshold 0.5: TP 4 FP 2 FN 1 TN 3, accuracy 7/10
#   0.45  4  3   4/7        0.8
#   0.35  4  4   1/2        0.8
#   0.25  5  4   5/9        1.0
#   0.15  5  5   1/2        1.0
# recall >= 0.7 from s = 0.55 down: highest precision 2/3. precision >= 0.8 only at 0.95 and
# 0.85: highest recall 0.4. Top 5 %: ceil(0.5) = 1 row, the 0.95 one, failing: precision 1.
OPERATING_PROBABILITY = np.array([0.95, 0.85, 0.75, 0.70, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15])
OPERATING_FAILS = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0])


def test_classification_metrics_fixed_operating_points():
    metrics = classification_metrics(OPERATING_FAILS, OPERATING_PROBABILITY, 0.5)
    assert set(metrics) == {
        "auc",
        "average_precision",
        "precision",
        "recall",
        "f1",
        "accuracy",
        "brier_score",
        "ece",
        "log_loss",
        "positive_rate",
        "decision_threshold",
        "precision_at_0_7",
        "recall_at_0_7",
        "f1_at_0_7",
        "precision_at_recall_0_7",
        "recall_at_precision_0_8",
        "precision_at_top_5pct",
    }
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["precision"] == pytest.approx(4 / 6)
    assert metrics["precision_at_0_7"] == pytest.approx(0.75)
    assert metrics["recall_at_0_7"] == pytest.approx(0.6)
    assert metrics["f1_at_0_7"] == pytest.approx(2 / 3)
    assert metrics["precision_at_recall_0_7"] == pytest.approx(2 / 3)
    assert metrics["recall_at_precision_0_8"] == pytest.approx(0.4)
    assert metrics["precision_at_top_5pct"] == pytest.approx(1.0)


def test_recall_at_precision_is_zero_when_no_operating_point_reaches_the_floor():
    # Alerting on the top row: precision 0; on both: 1/2. Neither reaches 0.8.
    metrics = classification_metrics(np.array([0, 1]), np.array([0.9, 0.8]), 0.5)
    assert metrics["recall_at_precision_0_8"] == 0.0


def test_precision_at_top_5pct_counts_ceil_of_5_percent_in_integers():
    # 60 rows: 5 % is exactly 3 rows (60 * 0.05 is 3.0000000000000004 in floats, ceil 4).
    # The top four scores fail, pass, fail, fail: top 3 -> 2/3 (top 4 would give 3/4).
    probability = np.linspace(0.0, 0.5, 60)
    probability[:4] = [0.99, 0.98, 0.97, 0.96]
    fails = np.zeros(60, dtype=int)
    fails[[0, 2, 3]] = 1
    assert precision_at_top_percent(fails, probability, 5) == pytest.approx(2 / 3)
    # 21 rows: ceil(1.05) = 2 rows. Ties at the cut go in row order: rows 0 and 1 of the three
    # tied at 0.9 (failing, healthy, failing) -> 1/2.
    tied = np.array([0.9, 0.9, 0.9] + [0.1] * 18)
    tied_fails = np.array([1, 0, 1] + [0] * 18)
    assert precision_at_top_percent(tied_fails, tied, 5) == pytest.approx(0.5)


def test_rul_bucket_errors_on_a_hand_made_case():
    # |error| per row: 3, 0 (critical, < 10) | 4, 10 (warning, 10 <= true < 50) | 10, 20 (normal).
    true = np.array([2.0, 8.0, 10.0, 30.0, 50.0, 120.0])
    predicted = np.array([5.0, 8.0, 14.0, 20.0, 60.0, 100.0])
    assert rul_bucket_errors(true, predicted) == {
        "mae_rul_critical": 1.5,
        "rows_rul_critical": 2,
        "mae_rul_warning": 7.0,
        "rows_rul_warning": 2,
        "mae_rul_normal": 15.0,
        "rows_rul_normal": 2,
    }
    # With bands at 5 and 20 h: critical {2}: 3; warning {8, 10}: (0 + 4)/2; normal 40/3.
    moved = rul_bucket_errors(true, predicted, critical_hours=5.0, warning_hours=20.0)
    assert moved["mae_rul_critical"] == 3.0
    assert moved["mae_rul_warning"] == 2.0
    assert moved["mae_rul_normal"] == pytest.approx(40 / 3)
    # An empty bucket has no error to average: NaN, with zero rows.
    healthy = rul_bucket_errors(np.array([60.0, 80.0]), np.array([50.0, 80.0]))
    assert math.isnan(healthy["mae_rul_critical"]) and healthy["rows_rul_critical"] == 0
    assert healthy["mae_rul_normal"] == 5.0


def test_per_device_metrics_and_worst_devices():
    rows = [
        # A: labels 0 0 1 1, alert at >= 0.5 only on 0.8. AUC: of the 4 (failing, healthy)
        # pairs only (0.35, 0.4) is misordered -> 3/4. Brier (0.01 + 0.16 + 0.4225 + 0.04)/4.
        ("A", 0, 0.1), ("A", 0, 0.4), ("A", 1, 0.35), ("A", 1, 0.8),
        # B: never fails, alerts on 2 of 3 rows -> false-positive rate 2/3, AUC NaN.
        ("B", 0, 0.6), ("B", 0, 0.2), ("B", 0, 0.7),
        # C: both rows fail and alert -> recall 1; no healthy row -> false-positive rate NaN.
        ("C", 1, 0.9), ("C", 1, 0.7),
        # D: healthy, quiet. E: its failing row is not alerted -> recall 0, AUC 1.
        ("D", 0, 0.1), ("D", 0, 0.2),
        ("E", 1, 0.3), ("E", 0, 0.2),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["device", "label", "probability"])
    frame["alert"] = (frame["probability"] >= 0.5).astype(int)
    table = per_device_metrics(frame, "device", "label", "probability", "alert").set_index("device")
    assert list(table.index) == ["A", "B", "C", "D", "E"]
    assert table.loc["A", "rows"] == 4 and table.loc["A", "failure_rows"] == 2
    assert table.loc["A", "auc"] == pytest.approx(0.75)
    assert table.loc["A", "precision"] == 1.0 and table.loc["A", "recall"] == 0.5
    assert table.loc["A", "alerts"] == 1
    assert table.loc["A", "brier"] == pytest.approx(0.6325 / 4)
    assert table.loc["A", "mean_probability"] == pytest.approx(0.4125)
    assert math.isnan(table.loc["B", "auc"])
    assert table.loc["B", "precision"] == 0.0 and table.loc["B", "recall"] == 0.0
    assert table.loc["B", "false_positive_rate"] == pytest.approx(2 / 3)
    assert table.loc["B", "brier"] == pytest.approx(0.89 / 3)
    assert math.isnan(table.loc["C", "false_positive_rate"])
    assert table.loc["E", "auc"] == 1.0 and table.loc["E", "recall"] == 0.0

    # Devices with failures first by recall (E 0, A 0.5, C 1), then the others by
    # false-positive rate (B 2/3, D 0).
    worst = worst_devices(table.reset_index(), n=5)
    assert [record["device"] for record in worst] == ["E", "A", "C", "B", "D"]
    assert [record["device"] for record in worst_devices(table.reset_index(), n=2)] == ["E", "A"]
    assert worst[0]["recall"] == 0.0


def test_per_device_regression_and_worst_by_mae():
    # X: errors +2, -4 -> MAE 3, RMSE sqrt(10), bias -1. Y: error +10 -> 10, 10, 10.
    frame = pd.DataFrame(
        {"device": ["X", "X", "Y"], "rul": [10.0, 20.0, 5.0], "predicted": [12.0, 16.0, 15.0]}
    )
    table = per_device_regression(frame, "device", "rul", "predicted")
    assert list(table.columns) == ["device", "rows", "mae", "rmse", "bias"]
    x = table.set_index("device").loc["X"]
    assert (x["rows"], x["mae"], x["bias"]) == (2, 3.0, -1.0)
    assert x["rmse"] == pytest.approx(math.sqrt(10))
    assert [record["device"] for record in worst_devices(table)] == ["Y", "X"]


def test_score_distribution_overlays_one_histogram_per_class():
    fails = np.array([0, 0, 0, 1, 1])
    probability = np.array([0.1, 0.2, 0.8, 0.9, 0.6])
    figure = score_distribution(fails, probability, 0.5)
    try:
        assert isinstance(figure, plt.Figure)
        (axes,) = figure.axes
        histograms = [c for c in axes.containers if isinstance(c, BarContainer)]
        assert len(histograms) == 2
        heights = [sum(bar.get_height() for bar in histogram) for histogram in histograms]
        assert heights == [3, 2]
        legend = [text.get_text() for text in axes.get_legend().get_texts()]
        assert legend == ["healthy (n=3)", "fails within horizon (n=2)", "threshold 0.500"]
        assert axes.get_yscale() == "log"
        threshold_lines = [line for line in axes.get_lines() if "threshold" in line.get_label()]
        assert len(threshold_lines) == 1
        assert list(threshold_lines[0].get_xdata()) == [0.5, 0.5]
    finally:
        plt.close(figure)
