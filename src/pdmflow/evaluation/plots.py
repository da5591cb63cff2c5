"""Figures a reviewer compares in the MLflow UI (returned, not saved: logging is the step's job)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)


def evaluation_figures(
    y_true: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, Figure]:
    """ROC, precision-recall, calibration and confusion-matrix plots keyed by file name."""
    figures: dict[str, Figure] = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y_true, probability, ax=ax, name="candidate")
    ax.set_title("ROC (test period)")
    figures["roc_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    PrecisionRecallDisplay.from_predictions(y_true, probability, ax=ax, name="candidate")
    ax.set_title("Precision-recall (test period)")
    figures["precision_recall_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(y_true, probability, n_bins=10, ax=ax, name="candidate")
    ax.set_title("Calibration (test period)")
    figures["calibration_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        (probability >= threshold).astype(int),
        ax=ax,
        colorbar=False,
        display_labels=["healthy", "fails within horizon"],
    )
    ax.set_title(f"Confusion matrix at threshold {threshold:.3f}")
    figures["confusion_matrix.png"] = fig
    return figures
