"""Classification, calibration and remaining-useful-life metrics, and serving latency.

Names are fixed: every run logs the same keys.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)


def best_f1_threshold(y_true: np.ndarray, probability: np.ndarray) -> float:
    """The probability threshold that maximises F1 (used on the validation split)."""
    precision, recall, thresholds = precision_recall_curve(y_true, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


# Probabilities are clipped this far from 0 and 1 before log loss, so one confident miss gives a
# large but finite loss instead of infinity.
LOG_LOSS_CLIP = 1e-15


def calibration_bin_ids(probability: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """The equal-width bin (0 .. n_bins-1) on [0, 1] that each probability falls in.

    Bins are closed on the right, (k/n, (k+1)/n], and the first also holds 0: the same binning as
    `sklearn.calibration.calibration_curve`, so the ECE matches the reliability diagram's points.
    Raises ValueError when a probability lies outside [0, 1] or n_bins < 1.
    """
    probability = np.asarray(probability, dtype=float)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if probability.size and (np.nanmin(probability) < 0 or np.nanmax(probability) > 1):
        raise ValueError(
            "probabilities must lie in [0, 1]; got values from "
            f"{np.nanmin(probability):.6g} to {np.nanmax(probability):.6g}"
        )
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], probability, side="left")


def expected_calibration_error(
    y_true: np.ndarray, probability: np.ndarray, n_bins: int = 10
) -> float:
    """Expected calibration error over `n_bins` equal-width bins on [0, 1].

    The sum over non-empty bins of (rows in bin / all rows) * |mean(y_true) - mean(probability)|
    within the bin; 0 when every bin's failure rate equals its mean predicted probability.
    Binning as in `calibration_bin_ids`.
    """
    y_true = np.asarray(y_true, dtype=float)
    probability = np.asarray(probability, dtype=float)
    if y_true.shape != probability.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(
            "y_true and probability must be non-empty 1-D arrays of the same length; got shapes "
            f"{y_true.shape} and {probability.shape}"
        )
    bins = calibration_bin_ids(probability, n_bins)
    positives = np.bincount(bins, weights=y_true, minlength=n_bins)
    probability_sum = np.bincount(bins, weights=probability, minlength=n_bins)
    # |sum(y) - sum(p)| / N per bin equals (n_b / N) * |mean(y) - mean(p)|; empty bins add 0.
    return float(np.sum(np.abs(positives - probability_sum)) / y_true.size)


# Fixed operating points logged by every classification run (see `classification_metrics`).
FIXED_ALERT_THRESHOLD = 0.7
RECALL_FLOOR = 0.7
PRECISION_FLOOR = 0.8
TOP_SCORE_PERCENT = 5


def precision_at_recall(y_true: np.ndarray, probability: np.ndarray, floor: float) -> float:
    """Highest precision among the precision-recall curve's operating points with recall >= floor.

    The points are `sklearn.metrics.precision_recall_curve`'s (one per distinct score, alerting
    at probability >= that score). Recall 1 is always reached at the lowest score, so a value
    exists whenever there is a failing row.
    """
    precision, recall, _ = precision_recall_curve(y_true, probability)
    return float(np.max(precision[recall >= floor]))


def recall_at_precision(y_true: np.ndarray, probability: np.ndarray, floor: float) -> float:
    """Highest recall among the precision-recall curve's operating points with precision >= floor.

    0.0 when no operating point reaches the floor (the curve's closing point, precision 1 at
    recall 0, is what remains then).
    """
    precision, recall, _ = precision_recall_curve(y_true, probability)
    return float(np.max(recall[precision >= floor]))


def precision_at_top_percent(
    y_true: np.ndarray, probability: np.ndarray, percent: int = TOP_SCORE_PERCENT
) -> float:
    """Share of failing rows among the k = ceil(N * percent / 100) rows with the highest scores.

    k is computed in integers (no float rounding: 60 rows at 5 % is 3, not 4), at least 1 for a
    non-empty input. Scores tied at the cut are taken in row order (a stable sort), so exactly k
    rows are counted.
    """
    y_true = np.asarray(y_true, dtype=float)
    probability = np.asarray(probability, dtype=float)
    k = -(-y_true.size * percent // 100)
    if k == 0:
        return float("nan")
    top = np.argsort(-probability, kind="stable")[:k]
    return float(np.mean(y_true[top]))


def classification_metrics(
    y_true: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float]:
    """Ranking, operating-point and calibration metrics of a failure classifier (fixed keys).

    At the run's decision threshold (alert when probability >= `threshold`): `precision`,
    `recall`, `f1` (0 when undefined) and `accuracy` (share of rows classified correctly).
    Threshold-free: `auc` (ROC), `average_precision`, `brier_score`; `ece` is
    `expected_calibration_error` with 10 bins; `log_loss` is computed on probabilities clipped to
    [LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP]. `positive_rate` is the share of failing rows and
    `decision_threshold` the threshold itself.

    Fixed operating points, the same for every run so runs compare whatever threshold each chose:
    - `precision_at_0_7`, `recall_at_0_7`, `f1_at_0_7`: alerting at probability >= 0.7
      (FIXED_ALERT_THRESHOLD);
    - `precision_at_recall_0_7`: the highest precision among the precision-recall curve's
      operating points with recall >= 0.7 (`precision_at_recall`);
    - `recall_at_precision_0_8`: the highest recall among those with precision >= 0.8, 0.0 if
      none (`recall_at_precision`);
    - `precision_at_top_5pct`: the share of failing rows among the ceil(5 % of N) highest-scored
      rows (`precision_at_top_percent`).
    """
    y_true = np.asarray(y_true)
    probability = np.asarray(probability, dtype=float)
    predicted = (probability >= threshold).astype(int)
    fixed = (probability >= FIXED_ALERT_THRESHOLD).astype(int)
    clipped = np.clip(probability, LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
    return {
        "auc": float(roc_auc_score(y_true, probability)),
        "average_precision": float(average_precision_score(y_true, probability)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "brier_score": float(brier_score_loss(y_true, probability)),
        "ece": expected_calibration_error(y_true, probability),
        "log_loss": float(log_loss(y_true, clipped, labels=[0, 1])),
        "positive_rate": float(np.mean(y_true)),
        "decision_threshold": float(threshold),
        "precision_at_0_7": float(precision_score(y_true, fixed, zero_division=0)),
        "recall_at_0_7": float(recall_score(y_true, fixed, zero_division=0)),
        "f1_at_0_7": float(f1_score(y_true, fixed, zero_division=0)),
        "precision_at_recall_0_7": precision_at_recall(y_true, probability, RECALL_FLOOR),
        "recall_at_precision_0_8": recall_at_precision(y_true, probability, PRECISION_FLOOR),
        "precision_at_top_5pct": precision_at_top_percent(y_true, probability, TOP_SCORE_PERCENT),
    }


# PHM08 / C-MAPSS scoring constants: an error of 13 units early costs as much as 10 units late.
NASA_EARLY_SCALE = 13.0
NASA_LATE_SCALE = 10.0


def nasa_score(y_true: np.ndarray, predicted: np.ndarray) -> float:
    """The PHM08 / C-MAPSS asymmetric score, summed over rows (lower is better, 0 is perfect).

    With d = predicted - true per row: exp(-d/13) - 1 when d < 0 (early), exp(d/10) - 1 when
    d >= 0 (late), so a late error costs more than an early one of the same size (Saxena et al.,
    PHM 2008). The constants were set for engine cycles; here they apply in the label's units
    (hours), so the score compares runs of one tenant, not published C-MAPSS results. It grows
    exponentially and is `inf` once an error passes about 7,000 units.
    """
    error = np.asarray(predicted, dtype=float) - np.asarray(y_true, dtype=float)
    early = error[error < 0]
    late = error[error >= 0]
    with np.errstate(over="ignore"):
        total = np.sum(np.expm1(-early / NASA_EARLY_SCALE)) + np.sum(
            np.expm1(late / NASA_LATE_SCALE)
        )
    return float(total)


def regression_metrics(
    y_true: np.ndarray, predicted: np.ndarray, tolerance_hours: float, critical_hours: float
) -> dict[str, float]:
    """Remaining-useful-life metrics (hours).

    early: predicted more than `tolerance_hours` below the truth (maintenance too soon);
    late: more than `tolerance_hours` above it (the failure comes first, the costly error);
    critical_window_accuracy: of the readings truly inside the critical window, the share the
    model also puts inside it;
    nasa_score: `nasa_score`, the PHM08 asymmetric score summed over rows.
    """
    error = predicted - y_true
    critical = y_true < critical_hours
    return {
        "mae": float(mean_absolute_error(y_true, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, predicted))),
        "r2": float(r2_score(y_true, predicted)),
        "early_prediction_rate": float(np.mean(error < -tolerance_hours)),
        "late_prediction_rate": float(np.mean(error > tolerance_hours)),
        "critical_window_accuracy": (
            float(np.mean(predicted[critical] < critical_hours)) if critical.any() else float("nan")
        ),
        "nasa_score": nasa_score(y_true, predicted),
    }


def rul_bucket_errors(
    y_true: np.ndarray,
    predicted: np.ndarray,
    critical_hours: float = 10.0,
    warning_hours: float = 50.0,
) -> dict[str, float]:
    """Mean absolute RUL error (hours) within buckets of the *true* remaining useful life.

    `critical`: true RUL < critical_hours; `warning`: critical_hours <= true < warning_hours;
    `normal`: true >= warning_hours (the same bands as the health status). Keys
    `mae_rul_critical`, `mae_rul_warning`, `mae_rul_normal` (NaN for an empty bucket) and
    `rows_rul_critical`, `rows_rul_warning`, `rows_rul_normal` (row counts).
    """
    y_true = np.asarray(y_true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if y_true.shape != predicted.shape:
        raise ValueError(
            f"y_true and predicted must have the same shape; got {y_true.shape} and "
            f"{predicted.shape}"
        )
    if critical_hours > warning_hours:
        raise ValueError(
            f"critical_hours ({critical_hours}) must not exceed warning_hours ({warning_hours})"
        )
    error = np.abs(predicted - y_true)
    buckets = {
        "critical": y_true < critical_hours,
        "warning": (y_true >= critical_hours) & (y_true < warning_hours),
        "normal": y_true >= warning_hours,
    }
    result: dict[str, float] = {}
    for name, mask in buckets.items():
        rows = int(mask.sum())
        result[f"mae_rul_{name}"] = float(np.mean(error[mask])) if rows else math.nan
        result[f"rows_rul_{name}"] = rows
    return result
