"""Lineage tags on every registered version, and `pdmflow reproduce` rebuilding a version.

One smoke pipeline (a CSV source, so a test can take the file away) in a temp SQLite store is
shared by the module's tests.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import LENIENT_GATES, REPO, SMOKE, deep_merge, tracking_store_at
from mlflow import MlflowClient

from pdmflow.cli import run as cli_run
from pdmflow.config import TenantConfig, load_config
from pdmflow.data.sources import read_source
from pdmflow.errors import StepInputError
from pdmflow.registry import lineage
from pdmflow.steps.pipeline import run_pipeline
from pdmflow.steps.reproduce import REPRODUCES_TAG, run_reproduce

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=45)]

MODEL = "pdmflow-smoke-failure"


@dataclass
class Released:
    root: Path
    config_path: Path
    config: TenantConfig
    telemetry_csv: Path
    version: str


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Iterator[Released]:
    """Version 1 of the smoke model, released from a CSV source by the whole pipeline."""
    root = tmp_path_factory.mktemp("lineage")
    telemetry, events = read_source(load_config(SMOKE))
    telemetry.to_csv(root / "plant.csv", index=False)
    events.to_csv(root / "events.csv", index=False)
    overrides = {
        "source": {
            "kind": "csv",
            "telemetry_path": str(root / "plant.csv"),
            "events_path": str(root / "events.csv"),
        },
        "tuning": {"n_trials": 1},
        "training": {"refit": False},
        "evaluation": {"robustness": False, "shap_rows": 100},
        # Released whatever the one trial finds: lineage is under test, not the model.
        "gates": LENIENT_GATES,
    }
    config_path = root / "tenant.yaml"
    config_path.write_text(
        "# written by test_lineage\n"
        + yaml.safe_dump(deep_merge(yaml.safe_load(SMOKE.read_text()), overrides))
    )
    with tracking_store_at(root):
        config = load_config(config_path)
        version = run_pipeline(config, n_trials=1)
        yield Released(root, config_path, config, root / "plant.csv", version)


def version_tags(version: str = "1") -> dict[str, str]:
    return MlflowClient().get_model_version(MODEL, version).tags


def step_runs(step: str) -> list:
    experiment = MlflowClient().get_experiment_by_name("pdmflow-smoke")
    return MlflowClient().search_runs([experiment.experiment_id], f"tags.`pdmflow.step` = '{step}'")


def test_every_registered_version_carries_its_lineage(released):
    tags = version_tags(released.version)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert tags[lineage.GIT_COMMIT] == head.stdout.strip()
    assert tags[lineage.GIT_DIRTY] in ("true", "false")
    assert tags[lineage.PDMFLOW_VERSION] == importlib.metadata.version("pdmflow")

    # The config as written (comment included), on the promote run, with its digest.
    (promote,) = step_runs("promote")
    assert tags[lineage.CONFIG_URI] == f"runs:/{promote.info.run_id}/config.yaml"
    recorded = mlflow.artifacts.load_text(tags[lineage.CONFIG_URI])
    written = released.config_path.read_text()
    assert recorded == written and recorded.startswith("# written by test_lineage")
    assert tags[lineage.CONFIG_SHA256] == hashlib.sha256(written.encode()).hexdigest()
    assert tags[lineage.CONFIG_PATH] == str(released.config_path.resolve())

    (ingest,) = step_runs("ingest")
    assert tags[lineage.DATASET_DIGEST] == ingest.data.tags["pdmflow.dataset_digest"]
    assert tags[lineage.DATASET_SOURCE] == str(released.telemetry_csv)
    assert tags[lineage.INGEST_RUN] == ingest.info.run_id

    (features,) = step_runs("features")
    spec = mlflow.artifacts.load_text(f"runs:/{features.info.run_id}/features/feature_spec.json")
    assert tags[lineage.FEATURES_RUN] == features.info.run_id
    assert tags[lineage.FEATURE_SPEC_SHA256] == hashlib.sha256(spec.encode()).hexdigest()

    (tune,) = [r for r in step_runs("tune") if "best_family" in r.data.params]
    (train,) = step_runs("train")
    (evaluate,) = step_runs("evaluate")
    assert tags[lineage.TUNE_RUN] == tune.info.run_id
    assert tags[lineage.TRAIN_RUN] == train.info.run_id
    assert tags[lineage.EVALUATE_RUN] == evaluate.info.run_id == tags["evaluate_run_id"]
    best = json.loads(tags[lineage.BEST_PARAMS])
    assert best["family"] == tune.data.params["best_family"] == "lightgbm"
    assert best["params"] and all(
        train.data.params[f"lgbm_{k}"] == v for k, v in best["params"].items()
    )
    assert json.loads(tags[lineage.SEEDS]) == {
        "training.seed": 42,
        "source.synthetic.seed": 11,
        "split.seed": 0,
        "evaluation.seed": 0,
    }


def test_reproduce_rebuilds_the_version_with_equal_metrics(released, capsys):
    before = len(MlflowClient().search_model_versions(f"name = '{MODEL}'"))
    assert run_reproduce(MODEL, released.version) == 0
    out = capsys.readouterr().out
    # The steps print their own summaries first; the table follows, then the verdict.
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("metric ")))
    assert lines[start].split() == ["metric", "original", "reproduced", "difference"]
    rows = lines[start + 1 : -1]
    assert rows and all(row.split()[-1] == "equal" for row in rows)
    auc = next(row.split() for row in rows if row.split()[0] == "auc")
    assert auc[-1] == "equal" and abs(float(auc[3])) <= 1e-6
    assert not any(row.split()[0].startswith(("latency_", "champion_")) for row in rows)
    assert f"model {MODEL} version 1 reproduced:" in out

    (parent,) = step_runs("reproduce")
    assert parent.data.tags[REPRODUCES_TAG] == f"{MODEL}/1"
    assert parent.data.tags["pdmflow.reproduced"] == "equal"
    children = MlflowClient().search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags["pdmflow.step"] for r in children) == [
        "evaluate",
        "features",
        "ingest",
        "train",
    ]
    # Nothing promoted: the registry is as it was.
    assert len(MlflowClient().search_model_versions(f"name = '{MODEL}'")) == before


def test_reproduce_of_a_version_without_lineage_is_a_one_line_error(released, capsys):
    plain = mlflow.register_model(MlflowClient().get_model_version(MODEL, "1").source, MODEL)
    capsys.readouterr()  # register_model's own messages
    # The command line's own entry point, in this process (a new one costs seconds of imports).
    assert cli_run(["reproduce", "--model", MODEL, "--version", str(plain.version)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith(
        f"pdmflow reproduce: error: model {MODEL} version {plain.version} has no lineage tags"
    )

    with pytest.raises(StepInputError, match=f"^model {MODEL} has no version 99$"):
        run_reproduce(MODEL, "99")
    with pytest.raises(StepInputError, match="^model no-such-model has no version 1$"):
        run_reproduce("no-such-model", "1")


def test_reproduce_names_the_recorded_csv_when_it_is_gone(released):
    moved = released.telemetry_csv.with_suffix(".moved")
    released.telemetry_csv.rename(moved)
    try:
        with pytest.raises(StepInputError) as error:
            run_reproduce(MODEL, released.version)
    finally:
        moved.rename(released.telemetry_csv)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"model {MODEL} version 1: the recorded source {released.telemetry_csv} is no longer "
        "readable: "
    )
    assert f"telemetry file {released.telemetry_csv}: not found" in message


def test_reproduce_refuses_data_that_changed(released):
    original = released.telemetry_csv.read_text()
    lines = original.splitlines(keepends=True)
    released.telemetry_csv.write_text("".join(lines[:-1]))  # one reading fewer
    try:
        with pytest.raises(StepInputError, match="the data changed") as error:
            run_reproduce(MODEL, released.version)
    finally:
        released.telemetry_csv.write_text(original)
    assert "\n" not in str(error.value)
    assert version_tags()[lineage.DATASET_DIGEST] in str(error.value)
