"""promote: decide on the evaluation results, register the version, release it if it passed."""

from __future__ import annotations

import mlflow

from pdmflow.config import TenantConfig
from pdmflow.errors import GateFailure, StepInputError
from pdmflow.evaluation.gates import as_dicts, check_gates
from pdmflow.registry import production_version, register, release
from pdmflow.steps.evaluate import CHAMPION_VERSION_TAG
from pdmflow.steps.train import MODEL_URI_TAG
from pdmflow.tracking import latest_step_run, step_run


def run_promote(config: TenantConfig, evaluate_run_id: str = "latest") -> str:
    """Register the evaluated model; release it when every gate passes.

    Returns the registered version. Raises GateFailure (exit status 3) when a gate fails: the
    version is registered with its gate results but stays out of Staging and Production.
    """
    if evaluate_run_id == "latest":
        evaluate_run_id = latest_step_run(config, "evaluate").info.run_id
    evaluation = mlflow.get_run(evaluate_run_id)
    model_uri = evaluation.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise StepInputError(f"evaluate run {evaluate_run_id}: no model (tag {MODEL_URI_TAG})")
    name = config.registered_model_name
    champion = production_version(name)
    current = str(champion.version) if champion else "none"
    evaluated_against = evaluation.data.tags.get(CHAMPION_VERSION_TAG, "none")
    if current != evaluated_against:
        raise StepInputError(
            f"evaluate run {evaluate_run_id} compared against Production version "
            f"{evaluated_against} but Production is now {current}: run evaluate again"
        )

    metrics = evaluation.data.metrics
    results = check_gates(config.task, metrics, config.gates, has_champion=champion is not None)
    passed = all(r.passed for r in results)
    failed = [r.name for r in results if not r.passed]

    with step_run(config, "promote"):
        mlflow.log_params({"evaluate_run_id": evaluate_run_id, "model_uri": model_uri})
        tags = {f"gate.{r.name}": r.describe() for r in results}
        tags["gates_passed"] = str(passed).lower()
        tags["evaluate_run_id"] = evaluate_run_id
        summary = "; ".join(r.describe() for r in results)
        description = (
            f"Released: every gate passed ({summary})."
            if passed
            else f"Not released: failed {', '.join(failed)} ({summary})."
        )
        version = register(name, model_uri, tags, description)
        mlflow.log_dict(
            {"version": version.version, "passed": passed, "gates": as_dicts(results)},
            "gate_results.json",
        )
        mlflow.log_metric("gates_passed", int(passed))
        mlflow.set_tags(
            {
                "pdmflow.registered_version": str(version.version),
                "pdmflow.decision": "released" if passed else "rejected",
            }
        )
        if passed:
            release(name, version.version)
    # Raised after the run has ended: the step itself finished, its verdict is "rejected".
    if not passed:
        raise GateFailure(
            f"model {name} version {version.version} not promoted: failed gates {', '.join(failed)}"
        )
    print(f"model {name} version {version.version} released to Production (@champion)")
    return str(version.version)
