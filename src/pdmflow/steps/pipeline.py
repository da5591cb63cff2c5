"""main: the six steps as child runs of one parent pipeline run, handing artifact URIs on."""

from __future__ import annotations

import mlflow

from pdmflow.config import TenantConfig
from pdmflow.errors import GateFailure
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.promote import run_promote
from pdmflow.steps.train import run_train
from pdmflow.steps.tune import run_tune
from pdmflow.tracking import step_run


def run_pipeline(
    config: TenantConfig, n_trials: int | None = None, timeout_seconds: float | None = None
) -> str:
    """Run every step; return the released version (GateFailure when the model is rejected)."""
    with step_run(config, "main"):
        mlflow.log_params(
            {
                "config_tenant": config.tenant_id,
                "registered_model_name": config.registered_model_name,
            }
        )
        data_uri = run_ingest(config)
        features_uri = run_features(config, data_uri)
        tune_run_id = run_tune(config, features_uri, n_trials, timeout_seconds)
        train_run_id = run_train(config, features_uri, tune_run_id)
        evaluate_run_id = run_evaluate(config, train_run_id)
        try:
            version = run_promote(config, evaluate_run_id)
        except GateFailure as rejected:
            mlflow.set_tag("pdmflow.decision", "rejected")
            verdict: GateFailure | None = rejected
        else:
            mlflow.set_tags({"pdmflow.decision": "released", "pdmflow.released_version": version})
            verdict = None
    # The pipeline ran to the end either way; a rejection is reported through the exit status.
    if verdict is not None:
        raise verdict
    return version
