"""task: regression (remaining useful life) end to end, and its labels."""

import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE
from mlflow import MlflowClient

from pdmflow.artifacts import read_dataset
from pdmflow.config import load_config
from pdmflow.data.labels import health_status, remaining_useful_life
from pdmflow.errors import ConfigError, GateFailure
from pdmflow.serving import FailureScorer
from pdmflow.steps.pipeline import run_pipeline

pytestmark = pytest.mark.cost(seconds=100)


def test_rul_and_health_labels_hand_computed():
    t0 = pd.Timestamp("2026-01-01")
    telemetry = pd.DataFrame(
        {"device_id": "A", "timestamp": [t0 + pd.Timedelta(hours=h) for h in range(0, 200, 10)]}
    )
    events = pd.DataFrame({"device_id": ["A"], "event_time": [t0 + pd.Timedelta(hours=45)]})
    rul = remaining_useful_life(telemetry, events, 100, "device_id", "timestamp", "event_time")
    assert rul.iloc[:5].tolist() == [45, 35, 25, 15, 5]
    # After the failure: none follows; the cap is known once 100 h are still observed ...
    assert rul.iloc[5:10].tolist() == [100.0] * 5  # hours 50..90: observed until 190
    # ... and unknown (censored) after that.
    assert rul.iloc[10:].isna().all()
    status = health_status(rul, 10, 50)
    assert status.iloc[:5].tolist() == ["warning", "warning", "warning", "warning", "critical"]
    assert status.iloc[6] == "normal" and pd.isna(status.iloc[12])


def test_regression_with_a_target_column_is_refused(write_config):
    with pytest.raises(ConfigError, match="labels.target_column is for classification"):
        load_config(
            write_config({"task": "regression", "labels": {"target_column": "failure_indicator"}})
        )


@pytest.mark.slow
def test_rul_model_runs_end_to_end_as_a_second_registered_model(tracking_store, write_config):
    rul_config = load_config(
        write_config(
            {
                "task": "regression",
                "experiment_name": "pdmflow-smoke-rul",
                "registered_model_name": "pdmflow-smoke-rul",
                # A longer history: 48 h before each split boundary are purged for a 48 h cap.
                "source": {"synthetic": {"days": 45}},
                "labels": {"rul_cap_hours": 48, "critical_hours": 10, "warning_hours": 30},
                "gates": {"max_mae_hours": 15},
            }
        )
    )
    assert run_pipeline(load_config(SMOKE), n_trials=2) == "1"
    assert run_pipeline(rul_config, n_trials=2) == "1"

    client = MlflowClient()
    models = {m.name for m in client.search_registered_models()}
    assert models == {"pdmflow-smoke-failure", "pdmflow-smoke-rul"}
    (version,) = client.search_model_versions("name = 'pdmflow-smoke-rul'")
    assert version.current_stage == "Production"
    assert "mae: " in version.tags["gate.mae"] and "pass" in version.tags["gate.mae"]
    experiment = client.get_experiment_by_name("pdmflow-smoke-rul")
    (evaluate,) = client.search_runs([experiment.experiment_id], "tags.`pdmflow.step` = 'evaluate'")
    for metric in (
        "mae",
        "rmse",
        "r2",
        "early_prediction_rate",
        "late_prediction_rate",
        "critical_window_accuracy",
        "latency_device_p99_ms",
        "latency_pyfunc_p99_ms",
        "throughput_devices_per_s",
        "onnx_max_abs_difference",
    ):
        assert metric in evaluate.data.metrics
    assert evaluate.data.metrics["mae"] <= 15
    plots = {a.path for a in client.list_artifacts(evaluate.info.run_id, "plots")}
    assert plots == {
        "plots/predicted_vs_true.png",
        "plots/residuals.png",
        "plots/shap_summary.png",
        "plots/shap_importance_bar.png",
    }
    assert "robustness_worst_mae_increase" in evaluate.data.metrics
    assert {"mae_rul_critical", "mae_rul_warning", "mae_rul_normal"} <= set(evaluate.data.metrics)

    (ingest,) = client.search_runs([experiment.experiment_id], "tags.`pdmflow.step` = 'ingest'")
    telemetry, events = read_dataset(f"runs:/{ingest.info.run_id}/dataset")
    scored = FailureScorer.load("models:/pdmflow-smoke-rul/Production").score_telemetry(
        telemetry, events
    )
    assert list(scored.columns) == [
        "device_id",
        "timestamp",
        "remaining_useful_life_hours",
        "health_status",
        "sensor_health",
    ]
    assert (scored["sensor_health"] == "ok").all()  # the smoke fleet's sensors are all live
    assert scored["health_status"].isin(["critical", "warning", "normal"]).all()
    assert np.all(scored["remaining_useful_life_hours"] > -5)


def test_rul_gate_failure_is_reported(tracking_store, write_config):
    config = load_config(
        write_config(
            {
                "task": "regression",
                "experiment_name": "pdmflow-smoke-rul",
                "registered_model_name": "pdmflow-smoke-rul",
                "labels": {"rul_cap_hours": 48, "warning_hours": 30},
                "source": {"synthetic": {"days": 45}},
                "gates": {"max_mae_hours": 0.5},
            }
        )
    )
    with pytest.raises(GateFailure, match="failed gates mae"):
        run_pipeline(config, n_trials=1)
    (version,) = MlflowClient().search_model_versions("name = 'pdmflow-smoke-rul'")
    assert version.current_stage == "None"
