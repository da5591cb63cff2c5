"""Tracking set-up: one MLflow run per step, in the tenant's experiment.

The tracking URI is MLflow's own business: `MLFLOW_TRACKING_URI` when set, otherwise the embedded
SQLite store (`sqlite:///mlflow.db`) in the working directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, Run
from mlflow.exceptions import MlflowException

from pdmflow.config import TenantConfig
from pdmflow.engine import Engine
from pdmflow.errors import (
    ArtifactWriteError,
    ConfigError,
    PdmflowError,
    StepInputError,
    TrackingUnreachable,
)

# Progress bars for every artifact download drown the step's own output in logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow's HTTP client retries a refused connection 7 times with doubling backoff (about four
# minutes, in silence) and waits 120 s for an answer. It fails fast instead: one immediate retry
# (a keep-alive connection the server closed), a 60 s timeout; pdmflow's own loop, visible and
# bounded by tracking.max_wait_seconds, owns the wait (wait_for_tracking_server). An exported
# value wins; `mlflow run`'s child processes inherit these.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
# The first wait between two probes of an unreachable server; it doubles up to the cap.
FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 60.0

STEP_TAG = "pdmflow.step"
TENANT_TAG = "pdmflow.tenant"
ENGINE_DASHBOARD_TAG = "pdmflow.engine.dashboard"
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


def tracking_server_url() -> str | None:
    """The tracking server's URL with any password masked; None for a local store."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    from pdmflow.data.sources import redact_url  # the one way secrets leave a URL

    return redact_url(uri)


def is_unreachable(error: BaseException) -> bool:
    """True when `error` (or what it was raised from) is a refused, reset or timed-out HTTP
    connection: MLflow wraps those in an MlflowException, keeping the original as context."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _first_pdmflow_error(error: BaseException) -> PdmflowError | None:
    """The earliest PdmflowError `error` was raised while handling, if any."""
    found, seen = None, set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PdmflowError):
            found = current
        current = current.__cause__ or current.__context__
    return found


class _QuietLostServer(logging.Filter):
    """Drops Optuna's 'trial failed' warning (with its 30-line traceback) when the trial failed
    because the tracking server went away: the step's one-line error says that already."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] and is_unreachable(record.exc_info[1]))


logging.getLogger("optuna.study._optimize").addFilter(_QuietLostServer())


def retry_delays(max_wait_seconds: float) -> list[float]:
    """Waits between probes: 5, 10, 20, 40, 60, 60 ... s, the last cut so they sum to the bound."""
    delays: list[float] = []
    delay, left = FIRST_RETRY_SECONDS, float(max_wait_seconds)
    while left > 0:
        delays.append(min(delay, left))
        left -= delays[-1]
        delay = min(delay * 2, MAX_RETRY_SECONDS)
    return delays


def wait_for_tracking_server(config: TenantConfig, step: str) -> None:
    """Return once the tracking server answers; retry (one stderr line each) for at most
    tracking.max_wait_seconds, then raise TrackingUnreachable (exit status 4).

    A local store (SQLite, files) returns at once: there is nothing to wait for.
    """
    url = tracking_server_url()
    if url is None:
        return
    delays = retry_delays(config.tracking.max_wait_seconds)
    for attempt in range(len(delays) + 1):
        try:
            MlflowClient().search_experiments(max_results=1)
            return
        except Exception as error:
            if not is_unreachable(error):
                raise
        if attempt == len(delays):
            break
        print(
            f"tracking server {url} unreachable, retry {attempt + 1} of {len(delays)} "
            f"in {delays[attempt]:g} s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(delays[attempt])
    raise TrackingUnreachable(
        f"tracking server {url} unreachable for {config.tracking.max_wait_seconds:g} s "
        "(tracking.max_wait_seconds): start it, or check MLFLOW_TRACKING_URI, then run again",
        step,
    )


def lost_tracking_server(step: str) -> TrackingUnreachable:
    """The error for a tracking server that went away in the middle of `step`."""
    return TrackingUnreachable(
        f"tracking server {tracking_server_url() or mlflow.get_tracking_uri()} unreachable "
        f"(lost during the step): run it again when the server is back "
        "(a pipeline continues with `pdmflow main --resume`)",
        step,
    )


# A store that is full, read-only or forbidden: the step cannot write its artifacts.
ARTIFACT_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def as_pdmflow_error(error: BaseException, step: str) -> PdmflowError | None:
    """The one-line error for a failure of the stores under `step`, or None for any other:
    a lost tracking server (exit 4), an artifact store that refuses a write (exit 6)."""
    if is_unreachable(error):
        return lost_tracking_server(step)
    if isinstance(error, OSError) and error.errno in ARTIFACT_WRITE_ERRNOS:
        path = error.filename or error.filename2 or "the artifact store"
        return ArtifactWriteError(
            f"cannot write {path}: {ARTIFACT_WRITE_ERRNOS[error.errno]}: free space in the "
            "artifact store or make it writable, then run the step again"
        )
    return None


# What an experiment is for, as MLflow 3 records it: model training, not a GenAI app. MLflow 3
# UIs before its GenAI / Model training switch (3.17 has it) open such an experiment on its runs
# rather than on traces. Every tenant experiment carries it, those made before the tag too.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def tenant_experiment_id(config: TenantConfig) -> str:
    """The tenant's experiment (created when missing, tagged as model training), now active."""
    experiment = mlflow.set_experiment(config.experiment_name)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        MlflowClient().set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
        )
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


_pipeline_parent_id: str | None = None  # set by use_pipeline_run: steps become its children


def use_pipeline_run(config: TenantConfig, run_id: str | None) -> Run | None:
    """Make the step runs this process starts children of the pipeline run `run_id` (one
    `pdmflow pipeline-run open` made, e.g. for the Airflow DAG); None: top-level runs again.
    Raises StepInputError unless it is a pipeline (main) run in the tenant's experiment."""
    global _pipeline_parent_id
    _pipeline_parent_id = None
    if run_id is None:
        return None
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        run = None
    experiment = mlflow.get_experiment_by_name(config.experiment_name)
    if (
        run is None
        or run.data.tags.get(STEP_TAG) != "main"
        or experiment is None
        or run.info.experiment_id != experiment.experiment_id
    ):
        raise StepInputError(
            f"--parent-run-id {run_id}: not a pipeline (main) run in experiment "
            f"'{config.experiment_name}' (`pdmflow pipeline-run open` prints one)"
        )
    _pipeline_parent_id = run_id
    return run


@contextmanager
def step_run(config: TenantConfig, step: str) -> Iterator[Run]:
    """Start (or adopt) the MLflow run of one step; nested when a pipeline run is active.

    Waits first for an unreachable tracking server (wait_for_tracking_server); a server lost
    inside the step ends it with TrackingUnreachable (one line, exit status 4), not a traceback.
    """
    wait_for_tracking_server(config, step)
    try:
        adopted = _launcher_run(config)
        experiment_id = tenant_experiment_id(config)
        parent = mlflow.active_run()
        # A step run as its own command under a pipeline run another process opened.
        outer = _pipeline_parent_id if parent is None and adopted is None else None
        with mlflow.start_run(
            run_id=adopted,
            experiment_id=None if adopted else experiment_id,
            run_name=None if adopted else step,
            nested=parent is not None,
            parent_run_id=outer,
            tags={STEP_TAG: step, TENANT_TAG: config.tenant_id},
        ) as run:
            if adopted:
                mlflow.set_tag("mlflow.runName", step)
            yield run
    except PdmflowError:
        raise
    except Exception as error:
        # Ending the run of a step that failed may fail again (the server is gone): the first
        # error, the one a user can act on, is what surfaces.
        known = _first_pdmflow_error(error) or as_pdmflow_error(error, step)
        if known is not None:
            raise known from error
        raise


# `mlflow run` logs an entry point's parameters as given ("latest", "0") on the run a step
# adopts, and MLflow never changes a param: an input the step resolved to another value is
# logged under its name with this suffix.
RESOLVED_SUFFIX = "_resolved"


def log_step_inputs(params: dict[str, Any]) -> None:
    """`mlflow.log_params` for a step's inputs; one `mlflow run` already logged with another
    value (its default "latest", say) as <name>_resolved. Read back with `step_input`."""
    given = MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params(
        {
            f"{key}{RESOLVED_SUFFIX}" if key in given and given[key] != str(value) else key: value
            for key, value in params.items()
        }
    )


def step_input(run: Run, name: str) -> str | None:
    """The input `name` a step run used, as resolved (`log_step_inputs`); None when absent."""
    params = run.data.params
    return params.get(f"{name}{RESOLVED_SUFFIX}", params.get(name))


EngineFacts = tuple[dict[str, str], dict[str, str]]


def engine_facts(engine: Engine) -> EngineFacts:
    """(the engine's describe(), its dashboard link as a tag): what `log_engine` logs, taken
    while the engine runs, for a run that starts after it is closed."""
    link = engine.dashboard_link
    return engine.describe(), ({ENGINE_DASHBOARD_TAG: link} if link else {})


def log_engine(engine: Engine | EngineFacts) -> None:
    """The engine's describe() as params of the active run, its dashboard link as a tag."""
    params, tags = engine_facts(engine) if not isinstance(engine, tuple) else engine
    mlflow.log_params(params)
    mlflow.set_tags(tags)


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


# --- the pipeline run and its steps' runs ------------------------------------------------------

# On the parent, one tag rewritten as each step finishes: compact JSON {step: {"run_id": ...,
# "output": ...}}, the output being what the next step reads ("output" missing for a step that
# ran but gave none: a rejected promote). A resumed pipeline reads it back, and carries the
# steps it reuses on to its own parent.
STEPS_TAG = "pdmflow.steps"
# Pipeline runs made before STEPS_TAG carry a tag per step: still read, never written.
LEGACY_OUTPUT_TAG = "pdmflow.output."
LEGACY_STEP_RUN_TAG = "pdmflow.step_run."
CONFIG_DIGEST_TAG = "pdmflow.config_sha256"
# --resume: "true" continues the latest pipeline run (an error when there is none to continue);
# "auto" (the scheduler's retries) continues it when it did not finish, else starts afresh.
RESUME_MODES = ("false", "true", "auto")


def config_digest(config: TenantConfig) -> str:
    """What the steps' outputs depend on: every config key but `tracking` (the account and
    how long to wait for the server), so a resume may wait longer than the run it continues."""
    settings = config.model_dump(mode="json", by_alias=True, exclude={"tracking"})
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def resumable_pipeline_run(config: TenantConfig, mode: str, since: str | None = None) -> Run | None:
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
    elif runs[0].data.tags.get(CONFIG_DIGEST_TAG, config_digest(config)) != config_digest(config):
        nothing = f"the config changed since the latest pipeline run {runs[0].info.run_id}"
    if nothing is None:
        return runs[0]
    if mode == "auto":
        return None
    raise StepInputError(f"nothing to resume: {nothing}; run `pdmflow main` without --resume")


def recorded_steps(pipeline_run: Run | None) -> dict[str, dict[str, str]]:
    """The steps a pipeline run recorded, in order: {step: {"run_id": ..., "output": ...}}.

    Read from its STEPS_TAG, or from the tag per step of a run made by an earlier version.
    """
    if pipeline_run is None:
        return {}
    tags = pipeline_run.data.tags
    if STEPS_TAG in tags:
        return json.loads(tags[STEPS_TAG])
    legacy = {"run_id": LEGACY_STEP_RUN_TAG, "output": LEGACY_OUTPUT_TAG}
    recorded = {
        step: {key: tags[prefix + step] for key, prefix in legacy.items() if prefix + step in tags}
        for step in STEPS
    }
    return {step: entry for step, entry in recorded.items() if entry}


def steps_tag_value(steps: dict[str, dict[str, str]]) -> str:
    """STEPS_TAG's value: compact JSON, well under MLflow's 8,000 characters for a tag."""
    return json.dumps(steps, separators=(",", ":"))


def finished_steps(pipeline_run: Run | None) -> dict[str, dict[str, str]]:
    """The steps a pipeline run finished (those with an output), as recorded_steps gives them."""
    recorded = recorded_steps(pipeline_run)
    return {step: entry for step, entry in recorded.items() if "output" in entry}


def link_evidence(pipeline_run_id: str, ingest: Run | None, model_id: str | None) -> None:
    """Put on the pipeline run what the UI shows beside a run: as input, the dataset its ingest
    run read (with that run's context and origin tags); as output, the LoggedModel it trained."""
    client = MlflowClient()
    if ingest is not None and ingest.inputs and ingest.inputs.dataset_inputs:
        client.log_inputs(pipeline_run_id, datasets=list(ingest.inputs.dataset_inputs))
    if model_id is not None:
        client.log_outputs(pipeline_run_id, [LoggedModelOutput(model_id, step=0)])


def latest_child_run(parent: Run, step: str) -> str:
    """The run id of the newest `step` run under `parent` ("none" when there is none)."""
    runs = MlflowClient().search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`{STEP_TAG}` = '{step}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else "none"


def step_entry(parent: Run, step: str, output: str | None) -> dict[str, str]:
    """A step's STEPS_TAG entry: its newest run under `parent` and, when it finished, its
    output (what the next step reads and what `main --resume` reuses)."""
    entry = {"run_id": latest_child_run(parent, step)}
    if output is not None:
        entry["output"] = output
    return entry


def record_step(
    pipeline_run_id: str, step: str, entry: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Put one step's entry into the pipeline run's STEPS_TAG; return every step recorded.

    The tag is read back from the store first: under an orchestrator (the Airflow DAG) each
    step records itself from a process of its own.
    """
    client = MlflowClient()
    steps = recorded_steps(client.get_run(pipeline_run_id))
    steps[step] = entry
    client.set_tag(pipeline_run_id, STEPS_TAG, steps_tag_value(steps))
    return steps


def child_runs(parent: Run) -> dict[str, Run]:
    """The step runs under a pipeline run, by step."""
    runs = MlflowClient().search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return {r.data.tags[STEP_TAG]: r for r in runs if STEP_TAG in r.data.tags}
