"""Tenants: each shipped tenant (its data, features, training and default AUC, precision and
recall gates; the robustness re-scoring off) runs end to end into its own experiment and
registered model, and no step of one tenant ever reads another tenant's runs."""

import pytest
from conftest import REPO
from mlflow import MlflowClient

from pdmflow.config import load_config
from pdmflow.errors import StepInputError
from pdmflow.steps.features import run_features
from pdmflow.steps.pipeline import run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=200)]
TENANTS = ("manufacturing_org_1", "power_gen_org_1")


def lighter(config):
    """The shipped config with the evaluation's costliest extras off (the robustness re-scoring,
    with the noise gate that reads it, and SHAP on 2,000 rows): they have tests of their own;
    here what runs is the tenant's data, features, training and release, each apart from the
    other, with the default AUC, precision and recall gates."""
    evaluation = config.evaluation.model_copy(update={"robustness": False, "shap_rows": 100})
    gates = config.gates.model_copy(update={"max_noise_auc_drop": None})
    return config.model_copy(update={"evaluation": evaluation, "gates": gates})


def test_tenants_run_end_to_end_and_stay_apart(tracking_store, write_config):
    client = MlflowClient()
    configs = {t: lighter(load_config(REPO / "configs" / f"{t}.yaml")) for t in TENANTS}
    for config in configs.values():
        # The scheduler passes why it retrains; the pipeline run keeps it as a tag.
        assert run_pipeline(config, n_trials=1, reason="schedule: weekly monday 02:00") == "1"

    for tenant, config in configs.items():
        experiment = client.get_experiment_by_name(config.experiment_name)
        runs = client.search_runs([experiment.experiment_id])
        steps = [r for r in runs if "pdmflow.step" in r.data.tags]
        assert {r.data.tags["pdmflow.tenant"] for r in steps} == {config.tenant_id}
        run_ids = {r.info.run_id for r in runs}
        # Every step read its input from this tenant's experiment only.
        for run in steps:
            for key in ("data_uri", "features_uri"):
                if key in run.data.params:
                    assert run.data.params[key].split("/")[1] in run_ids, (tenant, key)
        (pipeline,) = [r for r in steps if r.data.tags["pdmflow.step"] == "main"]
        assert pipeline.data.tags["pdmflow.retrain_reason"] == "schedule: weekly monday 02:00"
        (version,) = client.search_model_versions(f"name = '{config.registered_model_name}'")
        assert version.run_id in run_ids and version.current_stage == "Production"
        assert version.tags["gates_passed"] == "true"

    features = {
        tenant: client.search_runs(
            [client.get_experiment_by_name(c.experiment_name).experiment_id],
            "tags.`pdmflow.step` = 'features'",
        )[0]
        for tenant, c in configs.items()
    }
    assert features["manufacturing_org_1"].data.params["label_source"] == "failure_indicator"
    assert features["power_gen_org_1"].data.params["label_source"].startswith("failure events")
    assert float(features["manufacturing_org_1"].data.metrics["feature_count"]) >= 40

    # A new tenant with no runs of its own finds nothing, although other tenants' runs exist.
    newcomer = load_config(
        write_config(
            {
                "tenant_id": "newcomer",
                "experiment_name": "pdmflow-newcomer",
                "registered_model_name": "pdmflow-newcomer-failure",
            }
        )
    )
    with pytest.raises(
        StepInputError, match="no finished 'ingest' run in experiment 'pdmflow-newcomer'"
    ):
        run_features(newcomer, "latest")
