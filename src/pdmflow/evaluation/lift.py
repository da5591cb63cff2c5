"""The candidate next to the reference model on the same test rows: reference_* and lift_*."""

from __future__ import annotations

import numpy as np

from pdmflow.config import TenantConfig
from pdmflow.evaluation.catalog import LIFT_METRICS
from pdmflow.evaluation.metrics import classification_metrics, regression_metrics


def reference_comparison(
    config: TenantConfig,
    truth: np.ndarray,
    reference_prediction: np.ndarray,
    reference_threshold: float | None,
    candidate: dict[str, float],
) -> dict[str, float]:
    """`reference_<m>` (the reference's test metric, at its own decision threshold) and
    `lift_<m>` (candidate minus reference) for each metric of LIFT_METRICS; for error metrics
    (LOWER_IS_BETTER) a negative lift is the candidate ahead."""
    if config.task == "classification":
        assert reference_threshold is not None
        scores = classification_metrics(
            truth.astype(int), reference_prediction, reference_threshold
        )
    else:
        labels = config.labels
        scores = regression_metrics(
            truth, reference_prediction, labels.rul_tolerance_hours, labels.critical_hours
        )
    names = LIFT_METRICS[config.task]
    found = {f"reference_{name}": float(scores[name]) for name in names}
    found.update(
        {
            f"lift_{name}": float(candidate[name]) - scores[name]
            for name in names
            if name in candidate
        }
    )
    return found
