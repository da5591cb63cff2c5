"""pdmflow monitor: PSI and KS by hand, the verdict, and a real release monitored end to end."""

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE
from mlflow import MlflowClient

from pdmflow.cli import run as cli_run
from pdmflow.config import MonitoringConfig, load_config
from pdmflow.data.sources import read_source
from pdmflow.monitoring import decide, drift_table, ks, psi, recent_performance
from pdmflow.monitoring.drift import EPSILON

MODEL = "pdmflow-smoke-failure"


def test_psi_and_ks_of_identical_samples_are_zero():
    sample = np.random.default_rng(0).normal(size=500)
    assert psi(sample, sample.copy(), bins=10) == 0.0
    assert ks(sample, sample.copy())[0] == 0.0


def test_psi_of_a_shift_into_the_upper_half_matches_the_hand_computation():
    expected = np.arange(1000.0)  # ten quantile bins of exactly 100 values, 0.1 each
    actual = np.arange(500.0, 1000.0)  # all in the upper five bins: 0.2 each, the rest empty
    by_hand = 5 * (0.2 - 0.1) * math.log(0.2 / 0.1) + 5 * (EPSILON - 0.1) * math.log(EPSILON / 0.1)
    assert psi(expected, actual, bins=10) == pytest.approx(by_hand, rel=1e-12)
    assert ks(expected, actual)[0] == pytest.approx(0.5)


def test_psi_of_a_boolean_sensor_uses_its_two_values_as_bins():
    expected = np.r_[np.zeros(80), np.ones(20)]
    actual = np.r_[np.zeros(50), np.ones(50)]
    by_hand = (0.5 - 0.8) * math.log(0.5 / 0.8) + (0.5 - 0.2) * math.log(0.5 / 0.2)
    assert psi(expected, actual, bins=10) == pytest.approx(by_hand, rel=1e-12)
    # KS: the largest gap between the two step functions, at 0: 0.8 - 0.5.
    assert ks(expected, actual)[0] == pytest.approx(0.3)


def test_drift_table_sorts_by_psi_and_the_verdict_names_the_worst_column():
    rng = np.random.default_rng(1)
    training = pd.DataFrame(
        {"vibration": rng.normal(0, 1, 2000), "pressure": rng.normal(size=2000)}
    )
    recent = pd.DataFrame({"vibration": rng.normal(1, 1, 500), "pressure": rng.normal(size=500)})
    table = drift_table(training, recent, {"pressure": "sensor", "vibration": "sensor"}, bins=10)
    assert list(table["column"]) == ["vibration", "pressure"]
    assert table["psi"].iloc[0] > 0.25 > table["psi"].iloc[1]
    limits = MonitoringConfig()
    verdict = decide(table, {"recent_labelled_rows": 0.0}, limits)
    assert verdict.retrain
    assert verdict.reason == f"drift: vibration PSI {table['psi'].iloc[0]:.2f} > 0.25"
    calm = decide(
        table.iloc[1:], {"recent_labelled_rows": 40, "production_auc_recent": 0.6}, limits
    )
    assert calm.retrain and calm.reason == "accuracy: recent AUC 0.60 < 0.75 on 40 rows"


def test_recent_performance_needs_both_classes_for_an_auc():
    truth = np.array([0, 0, 1, 1])
    metrics, notes = recent_performance(
        "classification", truth, np.array([0.1, 0.6, 0.4, 0.9]), 0.5
    )
    assert metrics == {
        "recent_labelled_rows": 4,
        "production_auc_recent": 0.75,
        "production_precision_recent": 0.5,
        "production_recall_recent": 0.5,
    }
    metrics, notes = recent_performance("classification", np.zeros(3), np.full(3, 0.2), 0.5)
    assert metrics == {"recent_labelled_rows": 3}
    assert notes[0] == "no AUC: the 3 recently labelled rows hold one class only"
    metrics, _ = recent_performance(
        "regression", np.array([10.0, 20.0]), np.array([13.0, 19.0]), None
    )
    assert metrics["production_mae_recent"] == pytest.approx(2.0)


def _release_from_csv(tmp_path, write_config):
    """The smoke fleet written to CSV, released by the steps without tuning; its config path."""
    from pdmflow.steps import evaluate, features, ingest, promote, train

    telemetry, events = read_source(load_config(SMOKE))
    telemetry.to_csv(tmp_path / "telemetry.csv", index=False)
    events.to_csv(tmp_path / "events.csv", index=False)
    path = write_config(
        {
            "source": {
                "kind": "csv",
                "telemetry_path": str(tmp_path / "telemetry.csv"),
                "events_path": str(tmp_path / "events.csv"),
            },
            # One thread: the test shares its cores; boosting stops early anyway.
            "training": {"params": {"n_estimators": 100, "n_jobs": 1}},
            "evaluation": {"robustness": False, "shap_rows": 200},
            "gates": {"max_noise_auc_drop": None},
        }
    )
    config = load_config(path)
    ingest.run_ingest(config)
    features.run_features(config)
    train_run_id = train.run_train(config, "latest", "none")
    promote.run_promote(config, evaluate.run_evaluate(config, train_run_id))
    return path, telemetry, events


def _monitor_runs():
    experiment = MlflowClient().get_experiment_by_name("pdmflow-smoke")
    return MlflowClient().search_runs(
        [experiment.experiment_id],
        "tags.`pdmflow.step` = 'monitor'",
        order_by=["attributes.start_time DESC"],
    )


def test_monitor_refuses_without_a_release_passes_unchanged_data_and_flags_vibration_drift(
    tracking_store, write_config, tmp_path, capsys
):
    # Before any release: one line, exit status 2, no run logged.
    assert cli_run(["monitor", "--config", str(write_config())]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # MLflow's own log lines (creating the store) go to stderr too; ours is the one line.
    assert [line for line in err.splitlines() if line.startswith("pdmflow ")] == [
        f"pdmflow monitor: error: monitor: model {MODEL} has no Production version: "
        "run the pipeline first"
    ]
    experiment = MlflowClient().get_experiment_by_name("pdmflow-smoke")
    assert experiment is None or not MlflowClient().search_runs([experiment.experiment_id])

    path, telemetry, events = _release_from_csv(tmp_path, write_config)
    capsys.readouterr()

    assert cli_run(["monitor", "--config", str(path)]) == 0
    last_line = capsys.readouterr().out.splitlines()[-1]
    assert last_line.startswith("no retrain needed: max PSI ")
    (calm,) = _monitor_runs()
    assert calm.data.tags["pdmflow.monitor_verdict"] == "ok"
    assert calm.data.metrics["drift_max_psi"] <= 0.25
    assert calm.data.metrics["recent_labelled_rows"] == 0  # nothing newer than the release
    assert calm.data.params["model_version"] == "1"
    assert calm.data.metrics["devices_with_unhealthy_sensors"] == 0
    calm_health = mlflow.artifacts.load_dict(f"runs:/{calm.info.run_id}/sensor_health.json")
    assert len(calm_health) == 16 and set(calm_health.values()) == {"ok"}

    # A week of newer readings (last week's, a week later) with the vibration sensor reading
    # 0.2 higher (about two standard deviations), and that week's failures.
    week = pd.Timedelta(days=7)
    end = pd.to_datetime(telemetry["timestamp"]).max()
    newer = telemetry[pd.to_datetime(telemetry["timestamp"]) > end - week].copy()
    newer["timestamp"] = pd.to_datetime(newer["timestamp"]) + week
    newer["vibration"] += 0.2
    # One device's current frozen over its last eight readings (the health window: 6 h).
    frozen = sorted(newer["device_id"].unique())[0]
    frozen_tail = newer[newer["device_id"] == frozen].sort_values("timestamp").index[-8:]
    newer.loc[frozen_tail, "current"] = 1.25
    newer_events = events[pd.to_datetime(events["event_time"]) > end - week].copy()
    newer_events["event_time"] = pd.to_datetime(newer_events["event_time"]) + week
    pd.concat([telemetry, newer]).to_csv(tmp_path / "telemetry.csv", index=False)
    pd.concat([events, newer_events]).to_csv(tmp_path / "events.csv", index=False)

    assert cli_run(["monitor", "--config", str(path)]) == 5
    last_line = capsys.readouterr().out.splitlines()[-1]
    assert last_line.startswith("retrain advised: drift: vibration")
    drifted = _monitor_runs()[0]
    metrics, tags = drifted.data.metrics, drifted.data.tags
    assert tags["pdmflow.monitor_verdict"] == "retrain"
    assert last_line == f"retrain advised: {tags['pdmflow.monitor_reason']}"
    assert metrics["drift_max_psi"] > 0.25 and 0 < metrics["drift_max_ks"] <= 1
    # Labels of the new week are known up to a horizon before its end: the model is scored.
    assert metrics["recent_labelled_rows"] > 0
    assert 0 <= metrics["production_auc_recent"] <= 1
    assert {"production_precision_recent", "production_recall_recent"} <= set(metrics)
    table = mlflow.load_table("drift/drift_table.json", run_ids=[drifted.info.run_id])
    worst = table.sort_values("psi").iloc[-1]
    assert "vibration" in worst["column"] and worst["psi"] == pytest.approx(
        metrics["drift_max_psi"]
    )
    assert {"sensor", "feature"} == set(table["kind"])
    assert metrics["devices_with_unhealthy_sensors"] == 1
    health = mlflow.artifacts.load_dict(f"runs:/{drifted.info.run_id}/sensor_health.json")
    assert health.pop(frozen) == "current:flat-lined"
    assert len(health) == 15 and set(health.values()) == {"ok"}
    assert table.set_index("column").loc["pressure", "psi"] < 0.25
