"""main: the six steps as child runs of one parent pipeline run, handing artifact URIs on.

The parent run then carries the story: the headline metrics of its children, the decision and
the registered version as tags, and a markdown note (MLflow's run description) with the verdict
and each step's run, so two pipelines compare side by side in the runs table.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from pdmflow.config import TenantConfig
from pdmflow.errors import ConfigError, GateFailure, StepInputError
from pdmflow.registry import lineage
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.promote import run_promote
from pdmflow.steps.train import run_train
from pdmflow.steps.tune import run_tune
from pdmflow.tracking import STEP_TAG, STEPS, step_run, tenant_experiment_id

NOTE_TAG = "mlflow.note.content"
# Headline metrics the parent takes from each step besides evaluate (which gives all of its own).
FROM_STEPS = {
    "ingest": ("rows", "devices", "failures"),
    "train": ("feature_count", "trees", "cv_auc_std", "cv_mae_std"),
    "promote": ("gates_passed",),
}
# The note's table: (metric, label) in reading order; a metric the run lacks is left out.
NOTE_METRICS = (
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


def _shown(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.4g}"


def _children(parent_run_id: str, experiment_id: str) -> dict[str, Run]:
    runs = MlflowClient().search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    return {r.data.tags[STEP_TAG]: r for r in runs if STEP_TAG in r.data.tags}


def headline_metrics(children: dict[str, Run]) -> dict[str, float]:
    """The evaluate metrics, rows and devices, feature count, best tuning score, gates_passed."""
    metrics: dict[str, float] = {}
    if "evaluate" in children:
        metrics.update(children["evaluate"].data.metrics)
    for step, names in FROM_STEPS.items():
        if step in children:
            found = children[step].data.metrics
            metrics.update({name: found[name] for name in names if name in found})
    if "tune" in children:
        best = {k: v for k, v in children["tune"].data.metrics.items() if k.startswith("best_")}
        metrics.update({f"tune_{k}": v for k, v in best.items()})
    return metrics


def pipeline_note(config: TenantConfig, children: dict[str, Run], metrics: dict[str, float]) -> str:
    """The parent run's markdown description: verdict, headline table, the steps' runs."""
    promote = children.get("promote")
    tags = promote.data.tags if promote else {}
    version = tags.get("pdmflow.registered_version")
    name = config.registered_model_name
    if tags.get("pdmflow.decision") == "released":
        verdict = f"**Released**: version {version} of `{name}` is in Production (@champion)."
    elif tags.get("pdmflow.decision") == "rejected":
        failed = [
            k[len("gate.") :] for k, v in tags.items() if k.startswith("gate.") and "FAIL" in v
        ]
        verdict = (
            f"**Rejected**: version {version} of `{name}` is registered but not released; "
            f"failed gates: {', '.join(failed)}."
        )
    else:
        verdict = "**No decision**: the pipeline stopped before promote."
    lines = [verdict, ""]
    evaluate = children.get("evaluate")
    if evaluate and "pdmflow.champion_comparison" in evaluate.data.tags:
        lines += [f"Champion: {evaluate.data.tags['pdmflow.champion_comparison']}", ""]
    elif evaluate:
        lines += ["Champion: none (no Production version to compare with).", ""]
    if evaluate and "pdmflow.robustness_worst" in evaluate.data.tags:
        lines += [
            f"Most harmful perturbation: {evaluate.data.tags['pdmflow.robustness_worst']}.",
            "",
        ]
    if any(key.startswith("reference_") for key in metrics):
        # The reference model of the same run on the same rows, in its own column.
        lines += ["| metric | candidate | reference |", "|---|---|---|"]
        lines += [
            f"| {label} | {metrics[key]:.4g} | "
            + (f"{metrics[f'reference_{key}']:.4g}" if f"reference_{key}" in metrics else "")
            + " |"
            for key, label in NOTE_METRICS
            if key in metrics
        ]
    else:
        lines += ["| metric | value |", "|---|---|"]
        lines += [
            f"| {label} | {metrics[key]:.4g} |" for key, label in NOTE_METRICS if key in metrics
        ]
    lines += ["", "Steps:"]
    for step in STEPS:
        if step in children:
            run = children[step]
            link = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            lines.append(f"- {step}: [{run.info.run_id}]({link})")
    return "\n".join(lines) + "\n"


RETRAIN_REASON_TAG = "pdmflow.retrain_reason"
# On the parent, as each step finishes: its output (what the next step reads) and its run id.
# A resumed pipeline reads them back, and carries the ones it reuses on to its own parent.
OUTPUT_TAG = "pdmflow.output."
STEP_RUN_TAG = "pdmflow.step_run."
RESUMED_FROM_TAG = "pdmflow.resumed_from"
CONFIG_DIGEST_TAG = "pdmflow.config_sha256"
# --resume: "true" continues the latest pipeline run (an error when there is none to continue);
# "auto" (the scheduler's retries) continues it when it did not finish, else starts afresh.
RESUME_MODES = ("false", "true", "auto")


def _resumable(config: TenantConfig, mode: str, since: str | None = None) -> Run | None:
    """The tenant's latest pipeline run to continue, None to start afresh (see RESUME_MODES).

    With `since` (an ISO time), a run started before it is not continued: a scheduler's retry
    must not pick up an older retrain that failed, with its older data, when the attempt it
    retries never got as far as starting its own pipeline run.
    """
    if mode == "false":
        return None
    runs = MlflowClient().search_runs(
        [tenant_experiment_id(config)],
        filter_string=f"tags.`{STEP_TAG}` = 'main'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    nothing = None
    since_ms = None
    if since is not None:
        try:
            since_ms = int(pd.Timestamp(since).timestamp() * 1000)
        except ValueError:
            raise ConfigError(f"--resume-since: expected an ISO time, got {since!r}") from None
    if not runs:
        nothing = f"no pipeline run in experiment '{config.experiment_name}'"
    elif since_ms is not None and runs[0].info.start_time < since_ms:
        nothing = f"the latest pipeline run {runs[0].info.run_id} started before {since}"
    elif runs[0].info.status == "FINISHED":
        nothing = f"the latest pipeline run {runs[0].info.run_id} finished"
    elif runs[0].data.tags.get(CONFIG_DIGEST_TAG, _config_digest(config)) != _config_digest(
        config
    ):
        nothing = f"the config changed since the latest pipeline run {runs[0].info.run_id}"
    if nothing is None:
        return runs[0]
    if mode == "auto":
        return None
    raise StepInputError(f"nothing to resume: {nothing}; run `pdmflow main` without --resume")


def _latest_child(parent: Run, step: str) -> str:
    """The run id of the newest `step` run under `parent` ("none" when there is none)."""
    runs = MlflowClient().search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`{STEP_TAG}` = '{step}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else "none"


def _config_digest(config: TenantConfig) -> str:
    """What the steps' outputs depend on: every config key but `tracking` (the account and
    how long to wait for the server), so a resume may wait longer than the run it continues."""
    settings = config.model_dump(mode="json", by_alias=True, exclude={"tracking"})
    return lineage.sha256(json.dumps(settings, sort_keys=True))


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
    earlier = _resumable(config, resume, resume_since)
    done = {}
    if earlier is not None:
        done = {
            step: earlier.data.tags[OUTPUT_TAG + step]
            for step in STEPS
            if OUTPUT_TAG + step in earlier.data.tags
        }
    with step_run(config, "main") as parent:
        mlflow.log_params(
            {
                "config_tenant": config.tenant_id,
                "registered_model_name": config.registered_model_name,
            }
        )
        mlflow.set_tag(CONFIG_DIGEST_TAG, _config_digest(config))
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

        def step(name: str, run: Callable[[], str]) -> str:
            """The step's output: reused from the run resumed, or run now; kept on the parent."""
            if name in done:
                output = done[name]
                mlflow.set_tag(STEP_RUN_TAG + name, earlier.data.tags[STEP_RUN_TAG + name])
            else:
                output = run()
                mlflow.set_tag(STEP_RUN_TAG + name, _latest_child(parent, name))
            mlflow.set_tag(OUTPUT_TAG + name, output)
            return output

        data_uri = step("ingest", lambda: run_ingest(config))
        features_uri = step("features", lambda: run_features(config, data_uri))
        tune_run_id = step(
            "tune", lambda: run_tune(config, features_uri, n_trials, timeout_seconds, workers)
        )
        train_run_id = step("train", lambda: run_train(config, features_uri, tune_run_id))
        evaluate_run_id = step("evaluate", lambda: run_evaluate(config, train_run_id))
        try:
            version = step("promote", lambda: run_promote(config, evaluate_run_id))
        except GateFailure as rejected:
            verdict: GateFailure | None = rejected
            mlflow.set_tag(STEP_RUN_TAG + "promote", _latest_child(parent, "promote"))
        else:
            verdict = None
        children = _children(parent.info.run_id, parent.info.experiment_id)
        for name in done:  # reused steps: their runs live under the parent resumed
            children.setdefault(name, mlflow.get_run(earlier.data.tags[STEP_RUN_TAG + name]))
        metrics = headline_metrics(children)
        mlflow.log_metrics(metrics)
        promote_tags = children["promote"].data.tags
        registered = promote_tags["pdmflow.registered_version"]
        tags = {
            "pdmflow.decision": promote_tags["pdmflow.decision"],
            "pdmflow.registered_version": registered,
            NOTE_TAG: pipeline_note(config, children, metrics),
        }
        if verdict is None:
            tags["pdmflow.released_version"] = registered
        mlflow.set_tags(tags)
    # The pipeline ran to the end either way; a rejection is reported through the exit status.
    if verdict is not None:
        raise verdict
    return version
