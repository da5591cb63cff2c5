"""The pipeline run's story, from its step runs: headline metrics and a markdown note (MLflow's
run description) with the verdict, the table of metrics and each step's run, so two pipelines
compare side by side in the runs table."""

from __future__ import annotations

from mlflow.entities import Run

from pdmflow.config import TenantConfig
from pdmflow.evaluation.catalog import PIPELINE_FROM_STEPS, PIPELINE_NOTE_METRICS
from pdmflow.tracking import STEPS


def headline_metrics(children: dict[str, Run]) -> dict[str, float]:
    """The evaluate metrics, rows and devices, feature count, best tuning score, gates_passed."""
    metrics: dict[str, float] = {}
    if "evaluate" in children:
        metrics.update(children["evaluate"].data.metrics)
    for step, names in PIPELINE_FROM_STEPS.items():
        if step in children:
            found = children[step].data.metrics
            metrics.update({name: found[name] for name in names if name in found})
    if "tune" in children:
        best = {k: v for k, v in children["tune"].data.metrics.items() if k.startswith("best_")}
        metrics.update({f"tune_{k}": v for k, v in best.items()})
    return metrics


def pipeline_note(
    config: TenantConfig,
    children: dict[str, Run],
    metrics: dict[str, float],
    steps: dict[str, dict[str, str]] | None = None,
) -> str:
    """The parent run's markdown description: verdict, headline table, and a table of the
    steps: each step's run (a link) and its output (`steps`, the pipeline's STEPS_TAG)."""
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
    # With a reference model in the run: its figure on the same rows, in its own column.
    with_reference = any(key.startswith("reference_") for key in metrics)
    header = ["metric", "candidate", "reference"] if with_reference else ["metric", "value"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label in PIPELINE_NOTE_METRICS:
        if key not in metrics:
            continue
        cells = [label, f"{metrics[key]:.4g}"]
        if with_reference:
            reference = metrics.get(f"reference_{key}")
            cells.append("" if reference is None else f"{reference:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| step | run | output |", "|---|---|---|"]
    for step in STEPS:
        if step in children:
            run = children[step]
            link = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            output = (steps or {}).get(step, {}).get("output")
            cells = [step, f"[{run.info.run_id}]({link})", f"`{output}`" if output else ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
