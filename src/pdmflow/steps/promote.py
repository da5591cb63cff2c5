"""promote: decide on the evaluation results, register the version, release it if it passed."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run

from pdmflow.artifacts import CHAMPION_VERSION_TAG, MODEL_URI_TAG, run_of
from pdmflow.config import TenantConfig
from pdmflow.errors import GateFailure, StepInputError
from pdmflow.evaluation import model_card
from pdmflow.evaluation.gates import GateResult, as_dicts, check_gates
from pdmflow.registry import (
    ALIASES,
    lineage,
    production_version,
    register,
    release,
    release_lock,
    repair_release,
    update_description,
)
from pdmflow.registry.versions import check_mode
from pdmflow.tracking import latest_step_run, log_step_inputs, step_input, step_run


def run_promote(config: TenantConfig, evaluate_run_id: str = "latest") -> str:
    """Register the evaluated model; release it when every gate passes.

    Returns the registered version. Raises GateFailure (exit status 3) when a gate fails: the
    version is registered with its gate results but stays out of Staging and Production.
    Raises StepInputError, registering nothing, when Production changed since the evaluation
    (another release won the race, or came in between).
    """
    if evaluate_run_id == "latest":
        evaluate_run_id = latest_step_run(config, "evaluate").info.run_id
    evaluation = mlflow.get_run(evaluate_run_id)
    model_uri = evaluation.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise StepInputError(f"evaluate run {evaluate_run_id}: no model (tag {MODEL_URI_TAG})")
    name = config.registered_model_name
    # One release of a model at a time: without the lock two promotes can both find the
    # Production version they were evaluated against, and both release.
    with release_lock(name):
        # A promote killed part-way (a version left in Staging, @champion behind) is put right
        # first, so the decision below reads a consistent registry.
        mode = config.registry.mode
        for repaired in repair_release(name, mode):
            print(repaired)
        check_mode(name, mode)  # before anything is registered
        champion = production_version(name, mode)
        current = str(champion.version) if champion else "none"
        evaluated_against = evaluation.data.tags.get(CHAMPION_VERSION_TAG, "none")
        if current != evaluated_against:
            raise StepInputError(
                f"model {name}: Production changed since evaluation: run evaluate again "
                f"(evaluate run {evaluate_run_id} evaluated against version {evaluated_against}, "
                f"Production is now {current})"
            )
        metrics = evaluation.data.metrics
        results = check_gates(config.task, metrics, config.gates, has_champion=champion is not None)
        version = _register(config, evaluation, model_uri, results)
    # Raised after the run has ended: the step itself finished, its verdict is "rejected".
    failed = [r.name for r in results if not r.passed]
    if failed:
        raise GateFailure(
            f"model {name} version {version} not promoted: failed gates {', '.join(failed)}"
        )
    where = (
        "@production, @champion" if config.registry.mode == ALIASES else "Production (@champion)"
    )
    print(f"model {name} version {version} released to {where}")
    return version


def _register(
    config: TenantConfig, evaluation: Run, model_uri: str, results: list[GateResult]
) -> str:
    """Register the version with its gate results, card and lineage; release it if it passed."""
    name = config.registered_model_name
    evaluate_run_id = evaluation.info.run_id
    passed = all(r.passed for r in results)
    with step_run(config, "promote") as run:
        log_step_inputs({"evaluate_run_id": evaluate_run_id, "model_uri": model_uri})
        tags = {f"gate.{r.name}": r.describe() for r in results}
        tags["gates_passed"] = str(passed).lower()
        tags["evaluate_run_id"] = evaluate_run_id
        # The config as written travels with the version (pdmflow reproduce reads it back).
        text = lineage.config_text(config)
        mlflow.log_text(text, lineage.CONFIG_ARTIFACT)
        config_uri = f"runs:/{run.info.run_id}/{lineage.CONFIG_ARTIFACT}"
        tags.update(lineage.lineage_tags(config, evaluation, config_uri, lineage.sha256(text)))
        # The card is complete before anything is registered: a failure here leaves no version.
        facts = card_facts(config, evaluation, results, passed)
        location = f"model_card.md on promote run {run.info.run_id}"
        version = register(name, model_uri, tags, model_card.description(facts, location))
        facts.version = str(version.version)
        update_description(name, version.version, model_card.description(facts, location))
        try:
            mlflow.log_text(model_card.render(facts), "model_card.md")
            mlflow.log_dict(
                {"version": version.version, "passed": passed, "gates": as_dicts(results)},
                "gate_results.json",
            )
        except OSError:
            # The store filled up (or turned read-only) since config.yaml was written: a
            # version without its card and gate results is withdrawn, the registry unchanged.
            MlflowClient().delete_model_version(name, version.version)
            raise
        mlflow.log_metric("gates_passed", int(passed))
        mlflow.set_tags(
            {
                "pdmflow.registered_version": str(version.version),
                "pdmflow.decision": "released" if passed else "rejected",
            }
        )
        if passed:
            release(name, version.version, config.registry.mode)
    return str(version.version)


def card_facts(
    config: TenantConfig, evaluation: Run, gates: list[GateResult], released: bool
) -> model_card.CardFacts:
    """The model card's facts, from the evaluate run and the runs it descends from."""
    report = mlflow.artifacts.load_dict(f"runs:/{evaluation.info.run_id}/evaluation_report.json")
    features_run = run_of(step_input(evaluation, "features_uri"))
    ingest_run = run_of(step_input(features_run, "data_uri"))
    data = mlflow.artifacts.load_dict(f"runs:/{ingest_run.info.run_id}/validation_report.json")
    data["digest"] = ingest_run.data.tags.get("pdmflow.dataset_digest", "n/a")
    data["label"] = features_run.data.params.get("label_source", "n/a")
    if config.task == "classification" and not config.labels.target_column:
        data["label"] = f"fails within {config.labels.horizon_hours:g} h"
    elif config.task == "regression":
        data["label"] = "remaining useful life (h, capped)"
    split = {
        **{k: v for k, v in features_run.data.params.items() if k.startswith("split_")},
        **mlflow.artifacts.load_dict(f"runs:/{features_run.info.run_id}/split_report.json"),
        "cv_folds": config.split.cv_folds,
    }
    champion = report.get("champion") or {}
    return model_card.CardFacts(
        model_name=config.registered_model_name,
        task=config.task,
        released=released,
        gates=gates,
        metrics=dict(evaluation.data.metrics),
        data=data,
        split=split,
        # Evaluations made before model cards existed lack these: the card says so.
        features=report.get("features", {}),
        model=report.get("model", {}),
        champion=champion.get("sentence"),
        released_as="@production" if config.registry.mode == ALIASES else "Production",
        robustness=report.get("robustness") or [],
        worst_devices=report.get("worst_devices") or [],
        runs={
            "ingest": ingest_run.info.run_id,
            "features": features_run.info.run_id,
            "train": step_input(evaluation, "train_run_id"),
            "evaluate": evaluation.info.run_id,
        },
    )
