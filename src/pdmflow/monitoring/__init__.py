"""Monitoring the Production model: drift of the newest data against its training rows and
its accuracy on rows labelled since, read by `pdmflow monitor` and the scheduler."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from pdmflow.config import MonitoringConfig
from pdmflow.monitoring.drift import drift_table, ks, psi, sensor_and_feature_drift, top_features
from pdmflow.monitoring.recent import (
    RecentRows,
    recent_performance,
    recent_rows,
    training_period,
)
from pdmflow.monitoring.sensors import recent_sensor_health, unhealthy_count

__all__ = [
    "RecentRows",
    "Verdict",
    "decide",
    "describe",
    "drift_metrics",
    "drift_table",
    "ks",
    "psi",
    "recent_performance",
    "recent_rows",
    "recent_sensor_health",
    "sensor_and_feature_drift",
    "top_features",
    "training_period",
    "unhealthy_count",
]


@dataclass(frozen=True)
class Verdict:
    retrain: bool
    # Why retraining is advised (each limit passed), or a summary of what was checked.
    reason: str


def decide(
    drift: pd.DataFrame,
    performance: dict[str, float],
    limits: MonitoringConfig,
    notes: list[str] | None = None,
) -> Verdict:
    """Retrain when the largest PSI passes `limits.max_psi` or the recent AUC falls below
    `limits.min_recent_auc`; the reason names the worst column and the values."""
    problems: list[str] = []
    fine: list[str] = []
    measured = drift.dropna(subset=["psi"])
    if len(measured):
        worst = measured.loc[measured["psi"].idxmax()]
        value, column = float(worst["psi"]), worst["column"]
        if value > limits.max_psi:
            problems.append(f"drift: {column} PSI {value:.2f} > {limits.max_psi:g}")
        else:
            fine.append(f"max PSI {value:.2f} ({column}) <= {limits.max_psi:g}")
    else:
        fine.append("no drift measured (no recent readings)")
    rows = int(performance.get("recent_labelled_rows", 0))
    auc = performance.get("production_auc_recent")
    if auc is not None and not math.isnan(auc):
        if auc < limits.min_recent_auc:
            problems.append(
                f"accuracy: recent AUC {auc:.2f} < {limits.min_recent_auc:g} on {rows} rows"
            )
        else:
            fine.append(f"recent AUC {auc:.2f} >= {limits.min_recent_auc:g} on {rows} rows")
    elif "production_mae_recent" in performance:
        fine.append(f"recent MAE {performance['production_mae_recent']:.1f} h on {rows} rows")
    else:
        fine.extend((notes or [])[:1])
    if problems:
        return Verdict(True, "; ".join(problems))
    return Verdict(False, "; ".join(fine))


def drift_metrics(drift: pd.DataFrame) -> dict[str, float]:
    """drift_max_psi and drift_max_ks over the table; nothing when no column was measured."""
    if not drift["psi"].notna().any():
        return {}
    return {
        "drift_max_psi": float(drift["psi"].max()),
        "drift_max_ks": float(drift["ks_statistic"].max()),
    }


def describe(
    header: str, drift: pd.DataFrame, metrics: dict[str, float], notes: list[str], verdict: Verdict
) -> str:
    """The drift table and recent accuracy as lines a person reads; the last line is the
    verdict the scheduler reads: `retrain advised: <reason>` or `no retrain needed: <summary>`."""
    lines = [header, f"  {'column':<36} {'kind':<8} {'PSI':>7} {'KS':>7}"]
    for row in drift.itertuples():
        lines.append(f"  {row.column:<36} {row.kind:<8} {row.psi:>7.3f} {row.ks_statistic:>7.3f}")
    recent = {k: v for k, v in metrics.items() if k.startswith("production_")}
    rows = int(metrics.get("recent_labelled_rows", 0))
    shown = ", ".join(f"{k.removeprefix('production_')} {v:.3f}" for k, v in recent.items())
    lines.append(f"recently labelled rows: {rows}" + (f" ({shown})" if shown else ""))
    lines += [f"note: {note}" for note in notes]
    lines.append(
        f"{'retrain advised' if verdict.retrain else 'no retrain needed'}: {verdict.reason}"
    )
    return "\n".join(lines) + "\n"
