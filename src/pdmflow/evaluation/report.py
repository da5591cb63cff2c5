"""What evaluate computes on the candidate's test rows, as one call per task."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pdmflow.config import TenantConfig
from pdmflow.evaluation.maintenance import (
    alert_outcomes,
    per_device_metrics,
    per_device_regression,
)
from pdmflow.evaluation.metrics import classification_metrics, regression_metrics, rul_bucket_errors
from pdmflow.evaluation.plots import evaluation_figures, regression_figures, score_distribution
from pdmflow.features.builder import FeatureSpec


def assess_test_rows(
    config: TenantConfig,
    test: pd.DataFrame,
    label: str,
    spec: FeatureSpec,
    prediction: np.ndarray,
    threshold: float | None,
    events: pd.DataFrame,
) -> tuple[dict[str, float], pd.DataFrame, dict[str, Figure]]:
    """The task's metrics on the test rows, the per-device table and the plots.

    Classification: `classification_metrics` at the model's decision threshold, and the
    planners' view of its alerts (`alert_outcomes`: failures from the events, or from runs of
    the label for a tenant with a target column); regression: `regression_metrics` and the
    error per true-RUL bucket. Pure: frames in, numbers and figures out.
    """
    truth = test[label].to_numpy()
    device, time = spec.device_column, spec.time_column
    scored = test[[device, time, label]].assign(prediction=prediction)
    if config.task == "regression":
        labels = config.labels
        metrics = regression_metrics(
            truth, prediction, labels.rul_tolerance_hours, labels.critical_hours
        )
        metrics.update(
            rul_bucket_errors(truth, prediction, labels.critical_hours, labels.warning_hours)
        )
        per_device = per_device_regression(scored, device, label, "prediction")
        return metrics, per_device, regression_figures(truth, prediction)
    assert threshold is not None
    truth = truth.astype(int)
    metrics = classification_metrics(truth, prediction, threshold)
    scored["alert"] = prediction >= threshold
    metrics.update(
        alert_outcomes(
            scored,
            device,
            time,
            "alert",
            config.labels.horizon_hours,
            events=None if config.labels.target_column else events,
            event_time_column=config.schema_.event_time_column,
            label_column=label,
        )
    )
    per_device = per_device_metrics(scored, device, label, "prediction", "alert")
    figures = evaluation_figures(truth, prediction, threshold)
    figures["score_distribution.png"] = score_distribution(truth, prediction, threshold)
    return metrics, per_device, figures
