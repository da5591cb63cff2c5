"""Figures a reviewer compares in the MLflow UI (returned, not saved: logging is the step's job)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import CalibrationDisplay, calibration_curve  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)

from pdmflow.evaluation.metrics import (  # noqa: E402
    calibration_bin_ids,
    expected_calibration_error,
)

RELIABILITY_BINS = 10


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


def reliability_diagram(
    y_true: np.ndarray,
    probability_before: np.ndarray,
    probability_after: np.ndarray | None = None,
) -> Figure:
    """Reliability diagram: before (and, if given, after) calibration on one chart.

    Top: for each of 10 equal-width bins on [0, 1] that holds rows, the fraction of positives
    against the mean predicted probability (`sklearn.calibration.calibration_curve`), one line per
    model labelled with its ECE (`expected_calibration_error`, same bins), and the diagonal
    "perfectly calibrated". Bottom: how many rows fall in each bin, per model.
    """
    y_true = np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
    series = [("before calibration", np.asarray(probability_before, dtype=float), "o", "C0")]
    if probability_after is not None:
        series.append(("after calibration", np.asarray(probability_after, dtype=float), "s", "C1"))

    fig, (curve_ax, count_ax) = plt.subplots(
        2, 1, figsize=(5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    curve_ax.plot([0, 1], [0, 1], linestyle="--", color="black", label="perfectly calibrated")
    for name, probability, marker, color in series:
        fraction_positive, mean_predicted = calibration_curve(
            y_true, probability, n_bins=RELIABILITY_BINS, strategy="uniform"
        )
        ece = expected_calibration_error(y_true, probability, n_bins=RELIABILITY_BINS)
        curve_ax.plot(
            mean_predicted,
            fraction_positive,
            marker=marker,
            color=color,
            label=f"{name} (ECE {ece:.3f})",
        )
        # Counted with the ECE's binning, so a row exactly on an edge lands where the curve has it.
        counts = np.bincount(
            calibration_bin_ids(probability, RELIABILITY_BINS), minlength=RELIABILITY_BINS
        )
        count_ax.stairs(counts, edges, color=color, label=name)
    curve_ax.set_xlim(0, 1)
    curve_ax.set_ylim(0, 1)
    curve_ax.set_ylabel("fraction of positives")
    curve_ax.set_title("Reliability diagram")
    curve_ax.legend(loc="upper left")
    count_ax.set_xlabel("mean predicted probability")
    count_ax.set_ylabel("rows per bin")
    fig.tight_layout()
    return fig


SCORE_BINS = 50


def score_distribution(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> Figure:
    """Histograms of the predicted probability per class, overlaid, with the decision threshold.

    50 equal-width bins on [0, 1]; counts on a log scale, so the few failing rows stay visible
    next to the many healthy ones. Each histogram's legend entry gives its row count; a dashed
    vertical line marks `threshold` (rows at or right of it alert).
    """
    y_true = np.asarray(y_true)
    probability = np.asarray(probability, dtype=float)
    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for value, name, color in ((0, "healthy", "C0"), (1, "fails within horizon", "C3")):
        scores = probability[y_true == value]
        ax.hist(
            scores, bins=edges, alpha=0.5, color=color, log=True, label=f"{name} (n={scores.size})"
        )
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted probability of failure within the horizon")
    ax.set_ylabel("rows (log scale)")
    ax.set_title("Score distribution by class (test period)")
    ax.legend(loc="upper center")
    fig.tight_layout()
    return fig
