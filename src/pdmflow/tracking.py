"""Tracking set-up: one MLflow run per step, in the tenant's experiment.

The tracking URI is MLflow's own business: `MLFLOW_TRACKING_URI` when set, otherwise the embedded
SQLite store (`sqlite:///mlflow.db`) in the working directory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run

from pdmflow.config import TenantConfig
from pdmflow.errors import StepInputError

# Progress bars for every artifact download drown the step's own output in logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

STEP_TAG = "pdmflow.step"
TENANT_TAG = "pdmflow.tenant"
STEPS = ("ingest", "features", "tune", "train", "evaluate", "promote")


def tenant_experiment_id(config: TenantConfig) -> str:
    experiment = mlflow.set_experiment(config.experiment_name)
    return experiment.experiment_id


def _launcher_run(experiment_id: str) -> tuple[str | None, str | None]:
    """(run to adopt, launcher run to point elsewhere) for the run `mlflow run` created.

    `mlflow run` creates a run in the experiment named on its command line (Default when none is)
    and hands its id over in MLFLOW_RUN_ID. Tenants never log outside their own experiment, so a
    launcher run elsewhere only gets a pointer and our run is created in the tenant's experiment.
    """
    launcher_id = os.environ.get("MLFLOW_RUN_ID")
    if not launcher_id or mlflow.active_run() is not None:
        return None, None
    # Nested runs must not resume the launcher run: from here on runs are named explicitly.
    os.environ.pop("MLFLOW_RUN_ID")
    if MlflowClient().get_run(launcher_id).info.experiment_id == experiment_id:
        return launcher_id, None
    return None, launcher_id


@contextmanager
def step_run(config: TenantConfig, step: str) -> Iterator[Run]:
    """Start (or adopt) the MLflow run of one step; nested when a pipeline run is active."""
    experiment_id = tenant_experiment_id(config)
    adopted, redirected = _launcher_run(experiment_id)
    parent = mlflow.active_run()
    with mlflow.start_run(
        run_id=adopted,
        experiment_id=None if adopted else experiment_id,
        run_name=None if adopted else step,
        nested=parent is not None,
        tags={STEP_TAG: step, TENANT_TAG: config.tenant_id},
    ) as run:
        if adopted:
            mlflow.set_tag("mlflow.runName", step)
        if redirected:
            MlflowClient().set_tag(
                redirected,
                "mlflow.note.content",
                f"pdmflow logged this step in experiment '{config.experiment_name}', run "
                f"{run.info.run_id}. Pass --experiment-name {config.experiment_name} to "
                "`mlflow run` to log there directly.",
            )
            MlflowClient().set_tag(redirected, "pdmflow.redirected_to", run.info.run_id)
        yield run


@contextmanager
def downloaded(uri: str) -> Iterator[Path]:
    """The artifacts at `uri` in a local temp dir that is removed on exit.

    MLflow's own download leaves one temp dir behind per call; a daily retrain would fill /tmp.
    """
    with tempfile.TemporaryDirectory(prefix="pdmflow-") as tmp:
        yield Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))


def latest_step_run(config: TenantConfig, step: str) -> Run:
    """The newest FINISHED run of `step` in the tenant's experiment, or a clear error."""
    experiment_id = tenant_experiment_id(config)
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{STEP_TAG}` = '{step}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise StepInputError(
            f"no finished '{step}' run in experiment '{config.experiment_name}': "
            f"run `mlflow run . -e {step}` first or pass its output explicitly"
        )
    return runs[0]
