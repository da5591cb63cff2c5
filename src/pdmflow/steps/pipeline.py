"""main: the six steps as child runs of one parent pipeline run, handing artifact URIs on.

The parent run then carries the story (evaluation/pipeline_summary.py): the headline metrics of
its children, the decision and the registered version as tags, and a markdown note.
"""

from __future__ import annotations

from collections.abc import Callable

import mlflow
from mlflow import MlflowClient

from pdmflow.artifacts import logged_model_id
from pdmflow.config import TenantConfig
from pdmflow.errors import GateFailure
from pdmflow.evaluation.pipeline_summary import headline_metrics, pipeline_note
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.promote import run_promote
from pdmflow.steps.train import run_train
from pdmflow.steps.tune import run_tune
from pdmflow.tracking import (
    CONFIG_DIGEST_TAG,
    STEPS,
    STEPS_TAG,
    child_runs,
    config_digest,
    finished_steps,
    latest_child_run,
    link_evidence,
    resumable_pipeline_run,
    step_run,
    steps_tag_value,
)

NOTE_TAG = "mlflow.note.content"
RETRAIN_REASON_TAG = "pdmflow.retrain_reason"
RESUMED_FROM_TAG = "pdmflow.resumed_from"


def run_pipeline(
    config: TenantConfig,
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
    workers: int = 1,
    reason: str | None = None,
    resume: str = "false",
    resume_since: str | None = None,
) -> str:
    """Run every step; return the released version (GateFailure when the model is rejected).

    `reason` (why the scheduler retrains: its cadence, drift, a drop in accuracy) is the tag
    pdmflow.retrain_reason of the parent run. `resume` (RESUME_MODES) continues the tenant's
    latest pipeline run that did not finish: its finished steps' outputs are reused, the first
    step that did not finish runs again, and the new parent's tag pdmflow.resumed_from names
    the run it continues.
    """
    earlier = resumable_pipeline_run(config, resume, resume_since)
    done = finished_steps(earlier)
    steps: dict[str, dict[str, str]] = {}  # this pipeline's STEPS_TAG: {step: run_id, output}
    with step_run(config, "main") as parent:
        mlflow.log_params(
            {
                "config_tenant": config.tenant_id,
                "registered_model_name": config.registered_model_name,
            }
        )
        mlflow.set_tag(CONFIG_DIGEST_TAG, config_digest(config))
        if reason:
            mlflow.set_tag(RETRAIN_REASON_TAG, reason)
        if earlier is not None:
            mlflow.set_tag(RESUMED_FROM_TAG, earlier.info.run_id)
            if earlier.info.status == "RUNNING":  # its process died without ending it
                MlflowClient().set_terminated(earlier.info.run_id, "FAILED")
            reused = [step for step in STEPS if step in done]
            print(
                f"resuming pipeline run {earlier.info.run_id}: reusing "
                f"{', '.join(reused) or 'no step'}",
                flush=True,
            )

        def _record(name: str, entry: dict[str, str]) -> None:
            steps[name] = entry
            mlflow.set_tag(STEPS_TAG, steps_tag_value(steps))

        def _get_or_run(name: str, run: Callable[[], str]) -> str:
            """The step's output: reused from the run resumed, or run now; kept on the parent."""
            if name in done:
                _record(name, done[name])
            else:
                output = run()
                _record(name, {"run_id": latest_child_run(parent, name), "output": output})
            return steps[name]["output"]

        data_uri = _get_or_run("ingest", lambda: run_ingest(config))
        features_uri = _get_or_run("features", lambda: run_features(config, data_uri))
        tune_run_id = _get_or_run(
            "tune", lambda: run_tune(config, features_uri, n_trials, timeout_seconds, workers)
        )
        train_run_id = _get_or_run("train", lambda: run_train(config, features_uri, tune_run_id))
        evaluate_run_id = _get_or_run("evaluate", lambda: run_evaluate(config, train_run_id))
        try:
            version = _get_or_run("promote", lambda: run_promote(config, evaluate_run_id))
        except GateFailure as rejected:
            verdict: GateFailure | None = rejected
            _record("promote", {"run_id": latest_child_run(parent, "promote")})
        else:
            verdict = None
        children = child_runs(parent)
        for name in done:  # reused steps: their runs live under the parent resumed
            children.setdefault(name, mlflow.get_run(done[name]["run_id"]))
        metrics = headline_metrics(children)
        mlflow.log_metrics(metrics)
        # After the metrics: a model already among the run's outputs would be credited with them.
        model_id = logged_model_id(children["train"])
        link_evidence(parent.info.run_id, children.get("ingest"), model_id)
        promote_tags = children["promote"].data.tags
        registered = promote_tags["pdmflow.registered_version"]
        tags = {
            "pdmflow.decision": promote_tags["pdmflow.decision"],
            "pdmflow.registered_version": registered,
            NOTE_TAG: pipeline_note(config, children, metrics, steps),
        }
        if verdict is None:
            tags["pdmflow.released_version"] = registered
        mlflow.set_tags(tags)
    # The pipeline ran to the end either way; a rejection is reported through the exit status.
    if verdict is not None:
        raise verdict
    return version
