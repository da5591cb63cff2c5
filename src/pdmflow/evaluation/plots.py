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


def regression_figures(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, Figure]:
    """Predicted against true remaining useful life, and the residuals, keyed by file name."""
    figures: dict[str, Figure] = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, predicted, s=4, alpha=0.3)
    top = float(max(np.max(y_true), np.max(predicted)))
    ax.plot([0, top], [0, top], color="black", linewidth=1)
    ax.set_xlabel("true RUL (h)")
    ax.set_ylabel("predicted RUL (h)")
    ax.set_title("Remaining useful life (test period)")
    figures["predicted_vs_true.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(predicted - y_true, bins=50)
    ax.set_xlabel("predicted - true (h): < 0 early, > 0 late")
    ax.set_title("Residuals (test period)")
    figures["residuals.png"] = fig
    return figures
