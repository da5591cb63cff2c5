"""reproduce: rebuild a registered version from its lineage and compare the metrics.

    pdmflow reproduce --model <name> --version <N>

Reads the version's lineage tags (pdmflow.registry.lineage), loads the config recorded with it,
re-runs ingest (the dataset digest must be the recorded one), features, train with the recorded
tune run's parameters and evaluate, under one parent run tagged pdmflow.reproduces = name/N.
Nothing is promoted. Prints the metric differences; exit 0 when every deterministic metric is
equal within TOLERANCE, 1 otherwise.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow

from pdmflow.artifacts import run_of
from pdmflow.config import load_config
from pdmflow.errors import PdmflowError, StepInputError
from pdmflow.registry.lineage import Lineage, code_version, read_lineage, sha256
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train
from pdmflow.tracking import step_run, use_account

REPRODUCES_TAG = "pdmflow.reproduces"
TOLERANCE = 1e-6
# Not expected to repeat: wall-clock latency, and anything measured against whichever version
# is in Production today (champion_*, candidate_*_on_champion_rows).
SKIPPED_PREFIXES = ("latency_", "throughput_", "champion_")


@dataclass(frozen=True)
class MetricDifference:
    name: str
    original: float
    reproduced: float | None

    @property
    def equal(self) -> bool:
        return self.reproduced is not None and abs(self.reproduced - self.original) <= TOLERANCE


def is_deterministic(metric: str) -> bool:
    return not metric.startswith(SKIPPED_PREFIXES) and "champion" not in metric


def compare_metrics(
    original: dict[str, float], reproduced: dict[str, float]
) -> list[MetricDifference]:
    """One row per deterministic metric of the original evaluation, by name."""
    return [
        MetricDifference(name, value, reproduced.get(name))
        for name, value in sorted(original.items())
        if is_deterministic(name)
    ]


def difference_table(rows: list[MetricDifference]) -> str:
    """The comparison as a fixed-width table, one line per metric."""
    width = max([len("metric"), *(len(r.name) for r in rows)])
    lines = [f"{'metric':<{width}}  {'original':>14}  {'reproduced':>14}  {'difference':>11}  "]
    for row in rows:
        if row.reproduced is None:
            shown, difference, verdict = "missing", "", "DIFFERS"
        else:
            shown = f"{row.reproduced:.8g}"
            difference = f"{row.reproduced - row.original:+.2e}"
            verdict = "equal" if row.equal else "DIFFERS"
        lines.append(
            f"{row.name:<{width}}  {row.original:>14.8g}  {shown:>14}  {difference:>11}  {verdict}"
        )
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _recorded_config(lineage: Lineage, directory: Path) -> Path:
    """The config recorded with the version, downloaded into `directory`, digest checked."""
    where = f"model {lineage.model} version {lineage.version}"
    try:
        path = Path(
            mlflow.artifacts.download_artifacts(lineage.config_uri, dst_path=str(directory))
        )
    except Exception as error:  # MLflow raises several types; the user needs the URI
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StepInputError(
            f"{where}: recorded config {lineage.config_uri} cannot be read ({reason})"
        ) from None
    if sha256(path.read_text()) != lineage.config_digest:
        raise StepInputError(
            f"{where}: recorded config {lineage.config_uri} does not match its sha256 "
            f"{lineage.config_digest}"
        )
    return path


def run_reproduce(model: str, version: str) -> int:
    """Rebuild `model` version `version` from its lineage; 0 when its metrics repeat, else 1."""
    lineage = read_lineage(model, version)
    with tempfile.TemporaryDirectory(prefix="pdmflow-reproduce-") as tmp:
        config = load_config(_recorded_config(lineage, Path(tmp)))
    use_account(config)
    commit, _ = code_version()
    if commit != lineage.git_commit:
        print(
            f"pdmflow reproduce: warning: the code is at git commit {commit}, version {version} "
            f"was built at {lineage.git_commit}: differences may come from the code",
            file=sys.stderr,
        )
    with step_run(config, "reproduce"):
        mlflow.set_tag(REPRODUCES_TAG, f"{model}/{version}")
        mlflow.log_params(
            {
                "model": model,
                "version": version,
                "original_evaluate_run_id": lineage.evaluate_run_id,
            }
        )
        try:
            data_uri = run_ingest(config)
        except PdmflowError as error:
            raise StepInputError(
                f"model {model} version {version}: the recorded source {lineage.dataset_source} "
                f"is no longer readable: {error}"
            ) from None
        digest = run_of(data_uri).data.tags.get("pdmflow.dataset_digest")
        if digest != lineage.dataset_digest:
            raise StepInputError(
                f"model {model} version {version}: the data changed: source "
                f"{lineage.dataset_source} now reads as dataset {digest}, the version was "
                f"trained on dataset {lineage.dataset_digest}"
            )
        features_uri = run_features(config, data_uri)
        train_run_id = run_train(config, features_uri, lineage.tune_run_id)
        evaluate_run_id = run_evaluate(config, train_run_id)
        rows = compare_metrics(
            mlflow.get_run(lineage.evaluate_run_id).data.metrics,
            mlflow.get_run(evaluate_run_id).data.metrics,
        )
        table = difference_table(rows)
        differing = [r.name for r in rows if not r.equal]
        mlflow.log_text(table, "metric_differences.txt")
        mlflow.log_metric("metrics_differing", len(differing))
        mlflow.set_tag("pdmflow.reproduced", "equal" if not differing else "differs")
    print(table, end="")
    if differing:
        print(
            f"model {model} version {version}: {len(differing)} of {len(rows)} metrics differ "
            f"by more than {TOLERANCE:g} ({', '.join(differing)})"
        )
        return 1
    print(
        f"model {model} version {version} reproduced: {len(rows)} metrics equal within "
        f"{TOLERANCE:g} (latency and champion comparisons not compared)"
    )
    return 0
