"""The metric names the evaluate step logs, by task: what `gates.require` may name.

Kept free of imports so the config can check a gate's metric name when it is loaded. A test
runs evaluate and checks this list against the metrics the run really has, both ways.
"""

from __future__ import annotations

# Logged by every evaluate run, whatever the task.
COMMON = (
    "test_rows",
    "test_devices",
    "diagnostic_rows",
    "diagnostic_devices",
    "latency_onnx_p50_ms",
    "latency_onnx_p99_ms",
    "latency_pyfunc_p50_ms",
    "latency_pyfunc_p99_ms",
    "latency_device_p50_ms",
    "latency_device_p99_ms",
    "latency_batch_p50_ms",
    "latency_batch_p99_ms",
    "latency_batch_devices",
    "throughput_devices_per_s",
    "onnx_max_abs_difference",
    "feature_count",
)

CLASSIFICATION = (
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
    "failures_in_test",
    "failures_caught",
    "failure_catch_rate",
    "lead_time_median_hours",
    "lead_time_mean_hours",
    "false_alarms",
    "device_days",
    "false_alarms_per_device_day",
    "cv_auc_mean",
    "cv_auc_std",
    # with evaluation.robustness
    "robustness_worst_auc_drop",
    "robustness_noise_10pct_auc_drop",
    "robustness_dead_sensor_auc_drop",
)

REGRESSION = (
    "mae",
    "rmse",
    "r2",
    "early_prediction_rate",
    "late_prediction_rate",
    "critical_window_accuracy",
    "nasa_score",
    "mae_rul_critical",
    "mae_rul_warning",
    "mae_rul_normal",
    "rows_rul_critical",
    "rows_rul_warning",
    "rows_rul_normal",
    "cv_mae_mean",
    "cv_mae_std",
    "robustness_worst_mae_increase",
    "robustness_noise_10pct_mae_increase",
    "robustness_dead_sensor_mae_increase",
)

# The reference model (models/reference.py) is scored on the same test rows: each of these
# is logged as reference_<name> and lift_<name> (candidate minus reference).
LIFT_METRICS = {
    "classification": (
        "auc",
        "average_precision",
        "f1",
        "precision",
        "recall",
        "brier_score",
        "ece",
        "log_loss",
    ),
    "regression": ("mae", "rmse", "r2", "nasa_score"),
}
# Metrics where lower is better: a lift below zero is the candidate ahead.
LOWER_IS_BETTER = frozenset({"brier_score", "ece", "log_loss", "mae", "rmse", "nasa_score"})
# tuning.objective by task; the first is the default.
TUNING_OBJECTIVES = {
    "classification": ("average_precision", "auc", "log_loss"),
    "regression": ("mae", "rmse"),
}

# Logged only when a Production version exists to compare with (key: auc or mae).
CHAMPION = (
    "champion_comparison_rows",
    "champion_{key}",
    "candidate_{key}_on_champion_rows",
    "champion_{key}_difference",
    "champion_{key}_difference_low",
    "champion_{key}_difference_high",
)

CHAMPION_KEY = {"classification": "auc", "regression": "mae"}

# Measured by train (where both the native and the ONNX model exist); evaluate carries them on
# for the gates and the model card.
CARRIED_FROM_TRAIN = (
    "onnx_max_abs_difference",
    "cv_auc_mean",
    "cv_auc_std",
    "cv_mae_mean",
    "cv_mae_std",
)

# The pipeline run's headline metrics: every evaluate metric, and these of the other steps.
PIPELINE_FROM_STEPS = {
    "ingest": ("rows", "devices", "failures"),
    "train": ("feature_count", "trees", "cv_auc_std", "cv_mae_std"),
    "promote": ("gates_passed",),
}
# The pipeline run's note: (metric, label) in reading order; a metric the run lacks is left out.
PIPELINE_NOTE_METRICS = (
    ("auc", "AUC"),
    ("average_precision", "average precision"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("ece", "ECE"),
    ("precision_at_0_7", "precision at p >= 0.7"),
    ("lead_time_median_hours", "median lead time (h)"),
    ("failure_catch_rate", "share of failures caught"),
    ("false_alarms_per_device_day", "false alarms per device-day"),
    ("mae", "MAE (h)"),
    ("rmse", "RMSE (h)"),
    ("nasa_score", "NASA score"),
    ("robustness_noise_10pct_auc_drop", "AUC drop under 10 % noise"),
    ("robustness_dead_sensor_auc_drop", "AUC drop, worst sensor frozen"),
    ("champion_auc_difference", "AUC - champion's"),
    ("champion_mae_difference", "MAE - champion's (h)"),
    ("latency_device_p99_ms", "latency p99, one device (ms)"),
    ("feature_count", "features"),
    ("rows", "rows ingested"),
    ("devices", "devices"),
)


def evaluate_metric_names(
    task: str, robustness: bool = True, champion: bool = True, cv: bool = True
) -> set[str]:
    """Every metric name an evaluate run of `task` can log: `robustness` with
    evaluation.robustness, `champion` when a Production version exists, `cv` with
    split.cv_folds >= 2."""
    names = {*COMMON, *(CLASSIFICATION if task == "classification" else REGRESSION)}
    names |= {f"{kind}_{name}" for name in LIFT_METRICS[task] for kind in ("reference", "lift")}
    names.add("reference_feature_count")
    if not robustness:
        names -= {n for n in names if n.startswith("robustness_")}
    if not cv:
        names -= {n for n in names if n.startswith("cv_")}
    if champion:
        names |= {n.format(key=CHAMPION_KEY[task]) for n in CHAMPION}
    return names
