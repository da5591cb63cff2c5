"""Drift of a recent sample against the training sample: PSI and Kolmogorov-Smirnov.

PSI (population stability index) bins both samples on quantiles of the *training* sample, so
each training bin holds about the same share of rows, and sums (a - e) * ln(a / e) over the
bins, where e and a are the training and recent shares. A bin one sample leaves empty has its
share raised to `EPSILON`, so the sum stays finite. The usual reading: below 0.1 stable, 0.1 to
0.25 a small shift, above 0.25 a large one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from pdmflow.features.builder import CYCLES, FeatureSpec

# Share given to a bin one sample leaves empty: ln(0) would make the index infinite.
EPSILON = 1e-4
# Features that drift by construction, not because the machines changed: calendar encodings
# (a new month is always "out of distribution") and the time since the last failure or
# maintenance (the training period's first readings have no known failure and read the cap).
BY_CONSTRUCTION = {
    *(f"{unit}_{part}" for unit, _ in CYCLES for part in ("sin", "cos")),
    "hours_since_failure",
    "hours_since_maintenance",
}
DRIFT_COLUMNS = [
    "column",
    "kind",
    "psi",
    "ks_statistic",
    "ks_pvalue",
    "training_mean",
    "recent_mean",
    "training_rows",
    "recent_rows",
]


def _finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(values, dtype="float64").ravel()
    return array[np.isfinite(array)]


def quantile_edges(expected: np.ndarray, bins: int) -> np.ndarray:
    """Inner cut points of `bins` equal-count bins of `expected`; tied quantiles merge bins
    (a 0/1 sensor gets two bins, not ten)."""
    return np.unique(np.quantile(expected, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin: (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    index = np.searchsorted(edges, values, side="right")
    return np.bincount(index, minlength=len(edges) + 1) / len(values)


def psi(
    expected: Iterable[float], actual: Iterable[float], bins: int = 10, epsilon: float = EPSILON
) -> float:
    """Population stability index of `actual` against `expected` on `bins` quantile bins of
    `expected`; NaN and infinite values are left out; NaN when either sample is empty."""
    expected, actual = _finite(expected), _finite(actual)
    if not len(expected) or not len(actual):
        return float("nan")
    edges = quantile_edges(expected, bins)
    expected_share = np.maximum(bin_shares(expected, edges), epsilon)
    actual_share = np.maximum(bin_shares(actual, edges), epsilon)
    return float(np.sum((actual_share - expected_share) * np.log(actual_share / expected_share)))


def ks(expected: Iterable[float], actual: Iterable[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value); NaNs when either sample is empty."""
    expected, actual = _finite(expected), _finite(actual)
    if not len(expected) or not len(actual):
        return float("nan"), float("nan")
    result = ks_2samp(expected, actual)
    return float(result.statistic), float(result.pvalue)


def top_features(importance: dict[str, float], spec: FeatureSpec, k: int) -> list[str]:
    """The model's `k` most important features worth a drift check: not a raw sensor (checked
    as a sensor already) and not a feature that drifts by construction (`BY_CONSTRUCTION`)."""
    sensors = {*spec.continuous_sensors, *spec.boolean_sensors}
    known = set(spec.feature_names)
    ranked = sorted(importance.items(), key=lambda item: -item[1])
    eligible = [
        name
        for name, _ in ranked
        if name in known and name not in sensors and name not in BY_CONSTRUCTION
    ]
    return eligible[:k]


def drift_table(
    training: pd.DataFrame, recent: pd.DataFrame, columns: dict[str, str], bins: int
) -> pd.DataFrame:
    """One row per column (`columns`: name -> kind, e.g. sensor / feature): PSI, KS statistic
    and p-value, means and row counts; largest PSI first, columns without data last."""
    rows = []
    for column, kind in columns.items():
        expected, actual = _finite(training[column]), _finite(recent[column])
        statistic, pvalue = ks(expected, actual)
        rows.append(
            {
                "column": column,
                "kind": kind,
                "psi": psi(expected, actual, bins),
                "ks_statistic": statistic,
                "ks_pvalue": pvalue,
                "training_mean": float(expected.mean()) if len(expected) else float("nan"),
                "recent_mean": float(actual.mean()) if len(actual) else float("nan"),
                "training_rows": len(expected),
                "recent_rows": len(actual),
            }
        )
    table = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    return table.sort_values("psi", ascending=False, na_position="last", kind="stable").reset_index(
        drop=True
    )


def sensor_and_feature_drift(
    training_readings: pd.DataFrame,
    recent_readings: pd.DataFrame,
    training_features: pd.DataFrame,
    recent_features: pd.DataFrame,
    sensors: list[str],
    features: list[str],
    bins: int,
) -> pd.DataFrame:
    """One drift table: raw sensors on readings (kind sensor), model features on feature rows
    (kind feature); largest PSI first."""
    table = pd.concat(
        [
            drift_table(training_readings, recent_readings, dict.fromkeys(sensors, "sensor"), bins),
            drift_table(
                training_features, recent_features, dict.fromkeys(features, "feature"), bins
            ),
        ],
        ignore_index=True,
    )
    return table.sort_values("psi", ascending=False, na_position="last", kind="stable").reset_index(
        drop=True
    )
