"""main: the six steps as child runs of one parent pipeline run, handing artifact URIs on.

The parent run then carries the story (evaluation/pipeline_summary.py): the headline metrics of
its children, the decision and the registered version as tags, and a markdown note.
An orchestrator that runs each step as its own command (the Airflow DAG) opens the same parent
run with `open_pipeline_run`, passes it to each step (`--parent-run-id`) and ends it with
`close_pipeline_run`: the same run tree and the same story as `main`.
"""

from __future__ import annotations

from collections.abc import Callable

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run

from pdmflow.artifacts import logged_model_id
from pdmflow.config import TenantConfig
from pdmflow.errors import GateFailure
from pdmflow.evaluation.pipeline_summary import headline_metrics, pipeline_note
from pdmflow.tracking import (
    CONFIG_DIGEST_TAG,
    STEP_TAG,
    STEPS,
    TENANT_TAG,
    child_runs,
    config_digest,
    finished_steps,
    link_evidence,
    record_step,
    recorded_steps,
    resumable_pipeline_run,
    step_entry,
    step_run,
    tenant_experiment_id,
    use_pipeline_run,
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
    # The steps imported here: open_pipeline_run and close_pipeline_run (an orchestrator's
    # tasks, each its own process) need none of their libraries.
    from pdmflow.steps.evaluate import run_evaluate
    from pdmflow.steps.features import run_features
    from pdmflow.steps.ingest import run_ingest
    from pdmflow.steps.promote import run_promote
    from pdmflow.steps.train import run_train
    from pdmflow.steps.tune import run_tune

    earlier = resumable_pipeline_run(config, resume, resume_since)
    done = finished_steps(earlier)
    steps: dict[str, dict[str, str]] = {}  # this pipeline's STEPS_TAG: {step: run_id, output}
    with step_run(config, "main") as parent:
        params, tags = _parent_params_and_tags(config, reason)
        mlflow.log_params(params)
        mlflow.set_tags(tags)
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
            steps.update(record_step(parent.info.run_id, name, entry))

        def _get_or_run(name: str, run: Callable[[], str]) -> str:
            """The step's output: reused from the run resumed, or run now; kept on the parent."""
            if name in done:
                _record(name, done[name])
            else:
                _record(name, step_entry(parent, name, run()))
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
            _record("promote", step_entry(parent, "promote", None))
        else:
            verdict = None
        children = child_runs(parent)
        for name in done:  # reused steps: their runs live under the parent resumed
            children.setdefault(name, mlflow.get_run(done[name]["run_id"]))
        _record_outcome(config, parent.info.run_id, children, steps)
    # The pipeline ran to the end either way; a rejection is reported through the exit status.
    if verdict is not None:
        raise verdict
    return version


def _parent_params_and_tags(
    config: TenantConfig, reason: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    params = {
        "config_tenant": config.tenant_id,
        "registered_model_name": config.registered_model_name,
    }
    tags = {CONFIG_DIGEST_TAG: config_digest(config)}
    if reason:
        tags[RETRAIN_REASON_TAG] = reason
    return params, tags


def _record_outcome(
    config: TenantConfig,
    run_id: str,
    children: dict[str, Run],
    steps: dict[str, dict[str, str]],
) -> str | None:
    """On the active pipeline run `run_id`: the headline metrics, the dataset it read and the
    model it trained (what MLflow's UI shows beside a run), the decision, the registered and
    released version and the note; returns the decision (None: no promote decided)."""
    metrics = headline_metrics(children)
    mlflow.log_metrics(metrics)
    # After the metrics: a model already among the run's outputs would be credited with them.
    model_id = logged_model_id(children["train"]) if "train" in children else None
    link_evidence(run_id, children.get("ingest"), model_id)
    tags = {NOTE_TAG: pipeline_note(config, children, metrics, steps)}
    promote_tags = children["promote"].data.tags if "promote" in children else {}
    decision = promote_tags.get("pdmflow.decision")
    if decision is not None:
        registered = promote_tags["pdmflow.registered_version"]
        tags["pdmflow.decision"] = decision
        tags["pdmflow.registered_version"] = registered
        if decision == "released":
            tags["pdmflow.released_version"] = registered
    mlflow.set_tags(tags)
    return decision


def open_pipeline_run(config: TenantConfig, reason: str | None = None) -> str:
    """Start a pipeline run whose steps run as commands of their own (`--parent-run-id`);
    return its id. It stays RUNNING until close_pipeline_run."""
    params, tags = _parent_params_and_tags(config, reason)
    client = MlflowClient()
    run = client.create_run(
        tenant_experiment_id(config),
        run_name="main",
        tags={STEP_TAG: "main", TENANT_TAG: config.tenant_id, **tags},
    )
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def close_pipeline_run(config: TenantConfig, run_id: str) -> str:
    """End a pipeline run open_pipeline_run started, with the story `main` writes: FINISHED
    when promote decided (released or rejected), FAILED when a step before it never finished.
    Returns one line saying which."""
    parent = use_pipeline_run(config, run_id)
    use_pipeline_run(config, None)
    steps = recorded_steps(parent)
    children = {
        step: mlflow.get_run(entry["run_id"])
        for step, entry in steps.items()
        if entry.get("run_id", "none") != "none"
    }
    name = config.registered_model_name
    with mlflow.start_run(run_id=run_id):
        decision = _record_outcome(config, run_id, children, steps)
        if decision is None:
            unfinished = next((s for s in STEPS if "output" not in steps.get(s, {})), "promote")
            mlflow.end_run("FAILED")
            return f"pipeline run {run_id} stopped before {unfinished} finished: ended FAILED"
    version = children["promote"].data.tags["pdmflow.registered_version"]
    if decision == "released":
        return f"pipeline released {name} version {version}"
    return f"pipeline rejected {name} version {version}: not released (see its gate results)"
