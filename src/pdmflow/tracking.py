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
from pdmflow.errors import ConfigError, StepInputError

# Progress bars for every artifact download drown the step's own output in logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

STEP_TAG = "pdmflow.step"
TENANT_TAG = "pdmflow.tenant"
STEPS = ("ingest", "features", "tune", "train", "evaluate", "promote")


_account_in_use: str | None = None  # the username use_account put into this environment


def use_account(config: TenantConfig) -> None:
    """Log in as the tenant's account (tracking.username) on an authenticated server.

    MLflow's REST client reads MLFLOW_TRACKING_USERNAME/PASSWORD; the child processes of
    `mlflow run` inherit them. The password comes from the environment variable the config names
    and is never logged. A config without an account keeps the credentials the caller exported,
    but not those this process set for another tenant before.
    """
    global _account_in_use
    account = config.tracking
    if account.username is None:
        if _account_in_use and os.environ.get("MLFLOW_TRACKING_USERNAME") == _account_in_use:
            os.environ.pop("MLFLOW_TRACKING_USERNAME")
            os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        _account_in_use = None
        return
    if not mlflow.get_tracking_uri().startswith(("http://", "https://")):
        return  # a local store (SQLite, files) has no accounts: the same config runs there
    password = os.environ.get(account.password_env)
    if not password:
        raise ConfigError(
            f"tracking.username is '{account.username}' but the environment variable "
            f"{account.password_env} (tracking.password_env) holding its password is not set"
        )
    os.environ["MLFLOW_TRACKING_USERNAME"] = account.username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    _account_in_use = account.username


def tenant_experiment_id(config: TenantConfig) -> str:
    experiment = mlflow.set_experiment(config.experiment_name)
    return experiment.experiment_id


def _launcher_run(config: TenantConfig) -> str | None:
    """The run `mlflow run` created, to adopt, when it is in the tenant's experiment.

    `mlflow run` creates a run in the experiment named on its command line (Default when none is)
    and hands its id over in MLFLOW_RUN_ID. A tenant's runs live in its own experiment only, and
    MLflow Projects cannot be told to move or drop the run it made (it marks it finished itself,
    and fails when it is gone), so a launcher run elsewhere stops the step at once, before any
    work: a one-line error naming the flag, and a note on that empty run saying the same.
    """
    launcher_id = os.environ.get("MLFLOW_RUN_ID")
    if not launcher_id or mlflow.active_run() is not None:
        return None
    # Nested runs must not resume the launcher run: from here on runs are named explicitly.
    os.environ.pop("MLFLOW_RUN_ID")
    client = MlflowClient()
    experiment = client.get_experiment(client.get_run(launcher_id).info.experiment_id)
    if experiment.name == config.experiment_name:
        return launcher_id
    advice = (
        f"mlflow run logs into experiment '{experiment.name}', but tenant "
        f"'{config.tenant_id}' logs only in '{config.experiment_name}': pass "
        f"--experiment-name {config.experiment_name} to mlflow run"
    )
    client.set_tag(launcher_id, "mlflow.note.content", f"Nothing was logged here: {advice}.")
    raise StepInputError(advice)


@contextmanager
def step_run(config: TenantConfig, step: str) -> Iterator[Run]:
    """Start (or adopt) the MLflow run of one step; nested when a pipeline run is active."""
    adopted = _launcher_run(config)
    experiment_id = tenant_experiment_id(config)
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
