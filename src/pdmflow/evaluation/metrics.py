"""Classification metrics and serving latency. Names are fixed: every run logs the same keys."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
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


def classification_metrics(
    y_true: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float]:
    """AUC, average precision, precision/recall/F1 at the threshold, Brier score."""
    predicted = (probability >= threshold).astype(int)
    return {
        "auc": float(roc_auc_score(y_true, probability)),
        "average_precision": float(average_precision_score(y_true, probability)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "brier_score": float(brier_score_loss(y_true, probability)),
        "positive_rate": float(np.mean(y_true)),
        "decision_threshold": float(threshold),
    }


def single_row_latency_ms(
    predict: Callable[[np.ndarray], object], rows: np.ndarray, repeats: int = 300
) -> dict[str, float]:
    """p50/p99 wall time of one-row predictions, after a short warm-up."""
    rows = np.asarray(rows, dtype=np.float32)
    for i in range(min(20, len(rows))):
        predict(rows[i : i + 1])
    timings = []
    for i in range(repeats):
        row = rows[i % len(rows)][None, :]
        start = time.perf_counter()
        predict(row)
        timings.append((time.perf_counter() - start) * 1000)
    return {
        "latency_p50_ms": float(np.percentile(timings, 50)),
        "latency_p99_ms": float(np.percentile(timings, 99)),
    }


def regression_metrics(
    y_true: np.ndarray, predicted: np.ndarray, tolerance_hours: float, critical_hours: float
) -> dict[str, float]:
    """Remaining-useful-life metrics (hours).

    early: predicted more than `tolerance_hours` below the truth (maintenance too soon);
    late: more than `tolerance_hours` above it (the failure comes first, the costly error);
    critical_window_accuracy: of the readings truly inside the critical window, the share the
    model also puts inside it.
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
    }
