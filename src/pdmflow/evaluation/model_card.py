"""The model card of a registered version: what it learned from, how it did, why it was (not)
released, and where it is known to fall short. Markdown, for the version's description (MLflow
renders it) and the promote run's `model_card.md`.

Pure rendering: the promote step gathers the facts from the pipeline's runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pdmflow.evaluation.gates import GateResult
from pdmflow.models import families as model_families
from pdmflow.models.families import DEFAULT_FAMILY

# MLflow stores a version's description in a 5,000-character column (PostgreSQL enforces it).
DESCRIPTION_LIMIT = 5000

CLASSIFICATION_TABLE = (
    ("auc", "AUC"),
    ("average_precision", "average precision"),
    ("precision", "precision at the decision threshold"),
    ("recall", "recall at the decision threshold"),
    ("f1", "F1 at the decision threshold"),
    ("precision_at_0_7", "precision at p >= 0.7"),
    ("recall_at_0_7", "recall at p >= 0.7"),
    ("precision_at_top_5pct", "precision in the top 5 % of scores"),
    ("brier_score", "Brier score"),
    ("ece", "expected calibration error"),
    ("log_loss", "log loss"),
    ("failure_catch_rate", "share of failures alerted in time"),
    ("lead_time_median_hours", "median lead time (h)"),
    ("false_alarms_per_device_day", "false alarms per device-day"),
    ("cv_auc_mean", "CV AUC mean"),
    ("cv_auc_std", "CV AUC std"),
    ("latency_device_p99_ms", "one device scored from raw readings, p99 (ms)"),
    ("latency_pyfunc_p99_ms", "pyfunc predict, one row, p99 (ms)"),
)
REGRESSION_TABLE = (
    ("mae", "MAE (h)"),
    ("rmse", "RMSE (h)"),
    ("r2", "R²"),
    ("nasa_score", "NASA score"),
    ("mae_rul_critical", "MAE, critical RUL (h)"),
    ("mae_rul_warning", "MAE, warning RUL (h)"),
    ("mae_rul_normal", "MAE, normal RUL (h)"),
    ("early_prediction_rate", "early prediction rate"),
    ("late_prediction_rate", "late prediction rate"),
    ("cv_mae_mean", "CV MAE mean (h)"),
    ("cv_mae_std", "CV MAE std (h)"),
    ("latency_device_p99_ms", "one device scored from raw readings, p99 (ms)"),
    ("latency_pyfunc_p99_ms", "pyfunc predict, one row, p99 (ms)"),
)


@dataclass
class CardFacts:
    """Everything a card says; gathered by the promote step from the pipeline's runs."""

    model_name: str
    task: str
    released: bool
    gates: Sequence[GateResult]
    metrics: dict[str, float]
    data: dict[str, Any]  # the ingest validation report (rows, devices, time_start, ...)
    split: dict[str, Any]  # split params (split_by, boundaries) and the split report
    features: dict[str, Any]  # built, kept, families {family: count}, history, min_readings
    model: dict[str, Any]  # family, params, calibration, threshold, trees
    champion: str | None = None  # the comparison sentence, None without a champion
    robustness: list[dict[str, Any]] = field(default_factory=list)
    worst_devices: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # step -> run id
    version: str | None = None
    released_as: str = "Production"  # "@production" in registry.mode aliases


def _number(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _when(value: Any) -> str:
    """A timestamp to the minute (reports carry nanoseconds); anything else as it is."""
    try:
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")
    except (ValueError, TypeError):
        return str(value)


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(c) for c in row) + " |" for row in rows]
    return lines


def _decision(facts: CardFacts) -> list[str]:
    title = f"# {facts.model_name}" + (f" version {facts.version}" if facts.version else "")
    failed = [g.name for g in facts.gates if not g.passed]
    verdict = (
        f"**Released** to {facts.released_as}: every gate passed."
        if facts.released
        else f"**Not released**: failed {', '.join(failed)}."
    )
    lines = [title, "", verdict]
    if facts.champion:
        lines += ["", f"Champion comparison: {facts.champion}"]
    return lines


def _data(facts: CardFacts) -> list[str]:
    data, split = facts.data, facts.split
    start, end = _when(data.get("time_start", "?")), _when(data.get("time_end", "?"))
    lines = [
        "## Data",
        f"- source: {data.get('source', 'n/a')}; dataset digest `{data.get('digest', 'n/a')}`",
        f"- window: {start} .. {end} (UTC)",
        f"- {_number(data.get('rows', 0))} rows from {_number(data.get('devices', 0))} devices, "
        f"{_number(data.get('failures', 0))} failures",
        f"- label: {data.get('label', 'n/a')}",
    ]
    by = split.get("split_by", "?")
    rule = f"by {by}"
    if by == "time":
        rule += (
            f": validation from {_when(split.get('split_validation_start', '?'))}, test from "
            f"{_when(split.get('split_test_start', '?'))}"
        )
    else:
        rule += ": whole devices in train, validation and test (seeded hash)"
    lines.append(f"- split {rule}; cross-validation folds: {split.get('cv_folds', 0)}")
    rows = [
        [name, s.get("rows", 0), s.get("devices", 0), s.get("positive_rate", float("nan"))]
        for name, s in split.get("splits", {}).items()
    ]
    if rows:
        header = [
            "split",
            "rows",
            "devices",
            "positive rate" if facts.task == "classification" else "mean label",
        ]
        lines += ["", *_table(header, rows)]
    return lines


def _features_and_model(facts: CardFacts) -> list[str]:
    features, model = facts.features, facts.model
    if not features or not model:
        return ["## Features and model", "Not on record (evaluated before model cards existed)."]
    families = ", ".join(f"{family} {count}" for family, count in features["families"].items())
    lines = [
        "## Features and model",
        f"- {features['kept']} features kept of {features['built']} built: {families}",
        f"- model family: {model['family']}"
        + (f", {int(model['trees'])} trees" if model.get("trees") else ""),
    ]
    params = ", ".join(f"{k}={v}" for k, v in sorted(model.get("params", {}).items()))
    if params:
        lines.append(f"- parameters ({model.get('params_source', 'config')}): {params}")
    if facts.task == "classification":
        lines.append(
            f"- calibration: {model.get('calibration', 'none')}; decision threshold "
            f"{_number(model.get('threshold', float('nan')))} ({model.get('threshold_rule', '?')})"
        )
    return lines


def _metrics(facts: CardFacts) -> list[str]:
    table = CLASSIFICATION_TABLE if facts.task == "classification" else REGRESSION_TABLE
    metrics = facts.metrics
    if not any(key.startswith("reference_") for key in metrics):  # a run from before references
        rows = [[label, metrics[key]] for key, label in table if key in metrics]
        return ["## Test metrics", *_table(["metric", "value"], rows)]
    # The reference (models/reference.py) on the same rows: its metric where it has one.
    rows = [
        [label, metrics[key], metrics.get(f"reference_{key}", "")]
        for key, label in table
        if key in metrics
    ]
    return [
        "## Test metrics",
        "Beside the reference model trained in the same run on the same rows: the plain "
        "recipe (raw sensors, rolling mean and std, first differences; LightGBM defaults).",
        "",
        *_table(["metric", "candidate", "reference"], rows),
    ]


def dependence_sentence(robustness: list[dict[str, Any]], task: str, top: int = 3) -> str:
    """'The model depends on: volt (-0.19 AUC if frozen), ...' for the sensors whose
    freezing hurts most (at most `top`, those that hurt at all); "" when none does."""
    frozen = [r for r in robustness if str(r["perturbation"]).startswith("frozen:")]
    hurting = sorted((r for r in frozen if r["change"] > 0), key=lambda r: -r["change"])[:top]
    if not hurting:
        return ""
    unit = "AUC" if task == "classification" else "h MAE"
    sign = "-" if task == "classification" else "+"
    named = ", ".join(
        f"{r['perturbation'].removeprefix('frozen:')} ({sign}{r['change']:.2g} {unit} if frozen)"
        for r in hurting
    )
    return f"The model depends on: {named}."


def _gates(facts: CardFacts) -> list[str]:
    rows = []
    for gate in facts.gates:
        if gate.value is None and gate.passed:
            rows.append([gate.name, "n/a", "nothing to compare against", "pass"])
            continue
        value = "missing" if gate.value is None else gate.value
        verdict = "pass" if gate.passed else "**FAIL**"
        rows.append([gate.name, value, f"{gate.comparison} {_number(gate.threshold)}", verdict])
    lines = ["## Gates", *_table(["gate", "value", "rule", "verdict"], rows)]
    if any(g.name.endswith("_champion") and g.value is not None for g in facts.gates):
        bound = "lower" if facts.task == "classification" else "upper"
        lines += [
            "",
            f"The champion gates read the {bound} end of the 95 % bootstrap interval of "
            "(candidate - champion).",
        ]
    return lines


def _robustness(facts: CardFacts) -> list[str]:
    if not facts.robustness:
        return ["## Robustness", "Not measured (evaluation.robustness: false)."]
    metric = "AUC" if facts.task == "classification" else "MAE (h)"
    change = "AUC drop" if facts.task == "classification" else "MAE increase (h)"
    rows = [[r["perturbation"], r["value"], r["change"]] for r in facts.robustness]
    depends = dependence_sentence(facts.robustness, facts.task)
    return [
        "## Robustness (test rows, features rebuilt)",
        "noise_<k>pct: Gaussian noise of k % of each sensor's standard deviation; "
        "frozen:<sensor>: that sensor dead, held at its last value before the test period.",
        *(
            [
                "",
                f"{depends} Serving flags these sensors' health (`sensor_health`) beside "
                "each score: a device with one of them dead is not reliably all clear.",
            ]
            if depends
            else []
        ),
        "",
        *_table(["perturbation", metric, change], rows),
    ]


def _devices(facts: CardFacts) -> list[str]:
    if not facts.worst_devices:
        return []
    header = list(facts.worst_devices[0])
    rows = [[d[k] for k in header] for d in facts.worst_devices]
    return [
        "## Worst devices on the test rows",
        "Devices with failures by lowest recall (then highest Brier score), then devices "
        "without failures by highest false-positive rate."
        if facts.task == "classification"
        else "By highest MAE.",
        "",
        *_table(header, rows),
    ]


def _limitations(facts: CardFacts) -> list[str]:
    features = facts.features
    lines = [
        "## Known limitations",
        f"- A device is scored only with {features.get('history', '?')} of history and at least "
        f"{features.get('min_readings', '?')} readings behind its latest one; devices with less "
        "are refused (no score rather than a guess).",
        f"- Data from {_when(facts.data.get('time_start', '?'))} .. "
        f"{_when(facts.data.get('time_end', '?'))}, learned from its train and validation "
        "part (see Data); sensors outside the ranges seen then, new device types or a new "
        "sampling rate are outside what was tested.",
    ]
    lines += [f"- Split: {w}" for w in facts.split.get("warnings", [])]
    worst = max(facts.robustness, key=lambda r: r["change"], default=None)
    if worst and worst["change"] > 0:
        change = "AUC drop" if facts.task == "classification" else "MAE increase (h)"
        lines.append(
            f"- Most sensitive to {worst['perturbation']} "
            f"({change} {_number(worst['change'])}): watch that sensor's health."
        )
    if facts.task == "classification" and facts.metrics.get("failures_in_test", 1) < 10:
        lines.append(
            f"- The test period holds {_number(facts.metrics.get('failures_in_test', 0))} "
            "failures: lead time and catch rate rest on few events."
        )
    return lines


def _steps(facts: CardFacts) -> list[str]:
    if not facts.runs:
        return []
    return ["## Runs", *(f"- {step}: `{run_id}`" for step, run_id in facts.runs.items())]


SECTIONS = (
    _decision,
    _data,
    _features_and_model,
    _metrics,
    _gates,
    _robustness,
    _devices,
    _limitations,
    _steps,
)


def render(facts: CardFacts) -> str:
    """The whole card as markdown."""
    return "\n\n".join(_sections(facts)) + "\n"


def _sections(facts: CardFacts) -> list[str]:
    """Each non-empty section's markdown, in order, each built once."""
    return [text for text in ("\n".join(section(facts)) for section in SECTIONS) if text]


def description(facts: CardFacts, card_location: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """The card cut to fit a version description: whole sections in order while they fit, then
    a pointer to the full card (`card_location`)."""
    full = render(facts)
    if len(full) <= limit:
        return full
    pointer = f"\n\n(The full model card: {card_location}.)\n"
    kept: list[str] = []
    for text in _sections(facts):
        if len("\n\n".join([*kept, text])) + len(pointer) > limit:
            continue
        kept.append(text)
    return "\n\n".join(kept) + pointer


def model_facts(
    train_params: dict[str, str], train_metrics: dict[str, float], metadata: dict[str, Any]
) -> dict[str, object]:
    """What the model card says about the model (from its train run's params and metrics and
    the model's metadata): family, params, calibration, threshold."""
    family = train_params.get("family", DEFAULT_FAMILY)
    return {
        "family": family,
        "params": model_families.family(family).params_from_logged(train_params),
        "params_source": train_params.get("params_source", "config"),
        "trees": train_metrics.get("trees"),
        "calibration": metadata.get("calibration", "none"),
        "threshold": metadata.get("decision_threshold"),
        "threshold_rule": train_params.get("threshold_rule", "?"),
    }
