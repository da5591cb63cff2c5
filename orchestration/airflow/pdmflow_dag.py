"""One Airflow DAG per pdmflow tenant: `pdmflow_<tenant_id>`, retraining on the tenant's schedule.

    open_pipeline_run >> ingest >> features >> tune >> train >> evaluate >> promote
        >> close_pipeline_run

Every task is pdmflow's own command line (`python -m pdmflow.cli <step>`) in pdmflow's
environment: `open_pipeline_run` starts the parent `main` run, each step runs as its child
(`--parent-run-id`) and is handed the previous step's output (a `runs:/` URI or run id) through
XCom, never "latest", so two DAG runs never read each other's runs; `close_pipeline_run` records
the outcome on the parent as `pdmflow main` does. Exit statuses: 2 (bad input) fails the task at
once, 3 (a gate failed) skips `promote` (the DAG run succeeds, nothing released), anything else
(4 tracking unreachable, 6 artifact store full, a crash) is retried.

Airflow reads this file often, so it stays thin: it reads each tenant's YAML with plain `yaml`
(only `tenant_id` and `schedule`), and Airflow's environment needs neither pdmflow nor MLflow.
Settings, from the environment of Airflow's DAG processor and workers:

    PDMFLOW_PROJECT_DIR  the pdmflow checkout the commands run in (default: two folders up)
    PDMFLOW_CONFIGS      folder of tenant YAMLs, one DAG per *.yaml (default: <project>/configs)
    PDMFLOW_COMMAND      pdmflow's command line (default: <project>/.venv/bin/python -m pdmflow.cli)

MLFLOW_TRACKING_URI (and any other setting the steps read) passes on to the commands.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from airflow.sdk import DAG, CronTriggerTimetable, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

log = logging.getLogger(__name__)

PROJECT_DIR = Path(
    os.environ.get("PDMFLOW_PROJECT_DIR") or Path(__file__).resolve().parents[2]
).resolve()
CONFIGS_DIR = Path(os.environ.get("PDMFLOW_CONFIGS") or PROJECT_DIR / "configs")
COMMAND = shlex.split(
    os.environ.get("PDMFLOW_COMMAND") or f"{PROJECT_DIR / '.venv/bin/python'} -m pdmflow.cli"
)

# What the built-in scheduler does (scheduler.py: --retries 2, --backoff-seconds 60, doubling).
RETRIES = 2
RETRY_DELAY = timedelta(seconds=60)
RETRY_BACKOFF_MULTIPLIER = 2.0
# The defaults of pdmflow's ScheduleConfig, for a tenant YAML that leaves them out.
SCHEDULE_DEFAULTS = {
    "cadence": "daily",
    "at": "02:00",
    "day": "monday",
    "timezone": "UTC",
    "catch_up_hours": 168.0,
}
BAD_INPUT_EXIT, GATE_FAILED_EXIT = 2, 3
OPEN_TASK = "open_pipeline_run"
# `airflow dags trigger pdmflow_<tenant> --conf '{"n_trials": 5}'`: what a run may override.
PARAMS = {
    "n_trials": Param(None, type=["null", "integer"], minimum=1, description="tuning trials"),
    "timeout": Param(None, type=["null", "number"], minimum=0, description="tuning seconds"),
    "reason": Param(None, type=["null", "string"], description="tag pdmflow.retrain_reason"),
}


def tenant_schedule(plan: dict[str, Any] | None) -> dict[str, Any]:
    """schedule.* with pdmflow's defaults and `cron`: the tenant's own schedule.cron, or its
    cadence/at/day as the same cron (what scheduler.py fires on)."""
    plan = {**SCHEDULE_DEFAULTS, **(plan or {})}
    if plan.get("cron"):
        plan["cron"] = " ".join(str(plan["cron"]).split())
        return plan
    hour, minute = (int(part) for part in str(plan["at"]).split(":"))
    weekday = str(plan["day"])[:3] if plan["cadence"] == "weekly" else "*"
    plan["cron"] = f"{minute} {hour} * * {weekday}"
    return plan


def run_pdmflow(step: str, arguments: list[str], parent_run_id: str | None = None) -> str:
    """Run `pdmflow <step> ...` in the project; its last line on stdout (the step's output).

    A failure names the command and quotes its one-line error. Bad input (2) fails the task
    without a retry; a rejected model (3, promote) skips it; anything else raises for a retry.
    On the task's last failed try the pipeline run is ended FAILED (close_pipeline_run).
    """
    command = [*COMMAND, step, *arguments]
    log.info("running %s (in %s)", shlex.join(command), PROJECT_DIR)
    python_path = os.pathsep.join(filter(None, [str(PROJECT_DIR / "src"), os.getenv("PYTHONPATH")]))
    done = subprocess.run(
        command,
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": python_path},
        capture_output=True,
        text=True,
    )
    for stream, text in (("stdout", done.stdout), ("stderr", done.stderr)):
        if text.strip():
            log.info("pdmflow %s %s:\n%s", step, stream, text.rstrip())
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode == 0:
        return lines[-1].strip() if lines else ""
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    error = errors[-1].strip() if errors else "(no message)"
    if done.returncode == GATE_FAILED_EXIT and step == "promote":
        raise AirflowSkipException(f"gate failed, not released: {error}")
    ti = get_current_context()["ti"]
    final = done.returncode == BAD_INPUT_EXIT or ti.try_number > ti.max_tries
    if final and parent_run_id is not None:
        config = arguments[arguments.index("--config") + 1]
        ended = subprocess.run(
            [*COMMAND, "pipeline-run", "close", "--config", config, "--run-id", parent_run_id],
            cwd=PROJECT_DIR,
            env={**os.environ, "PYTHONPATH": python_path},
            capture_output=True,
            text=True,
        )
        log.info("%s", (ended.stdout or ended.stderr).strip())
    message = f"pdmflow {step} exited {done.returncode}: {error}"
    if done.returncode == BAD_INPUT_EXIT:
        raise AirflowFailException(f"{message} (bad input: not retried)")
    raise AirflowException(message)


def _open_reason(plan: dict[str, Any], catch_up_hours: float) -> str:
    """Why this DAG run retrains (the parent's pdmflow.retrain_reason); skips a scheduled run
    whose slot is older than schedule.catch_up_hours, as scheduler.py's catch-up does."""
    context = get_current_context()
    dag_run = context["dag_run"]
    unknown = sorted(set(dag_run.conf or {}) - set(PARAMS))
    if unknown:
        raise AirflowFailException(
            f"unknown --conf key(s) {', '.join(unknown)}: this DAG takes {', '.join(PARAMS)}"
        )
    if context["params"].get("reason"):
        return str(context["params"]["reason"])
    if str(dag_run.run_type) not in ("scheduled", "DagRunType.SCHEDULED"):
        return f"manual: airflow dags trigger {dag_run.dag_id}"
    slot = dag_run.data_interval_end or dag_run.logical_date
    late = datetime.now(UTC) - slot
    if late > timedelta(hours=catch_up_hours):
        raise AirflowSkipException(
            f"the retrain due {slot:%Y-%m-%d %H:%M} UTC is more than schedule.catch_up_hours "
            f"({catch_up_hours:g} h) late: skipped, not caught up"
        )
    return f"schedule: airflow cron {plan['cron']} {plan['timezone']}"


def build_dag(config_path: Path, tenant_id: str, plan: dict[str, Any]) -> DAG:
    """The tenant's DAG: its schedule, the six steps chained by XCom under one parent run."""
    config = ["--config", str(config_path)]

    with DAG(
        dag_id=f"pdmflow_{tenant_id}",
        description=f"pdmflow retrain of tenant {tenant_id} ({config_path.name})",
        schedule=CronTriggerTimetable(plan["cron"], timezone=plan["timezone"]),
        catchup=False,  # the newest missed slot runs once; older ones never (see open)
        max_active_runs=1,  # a run waits for the one before it to end
        params=PARAMS,
        tags=["pdmflow", tenant_id],
        default_args={
            "retries": RETRIES,
            "retry_delay": RETRY_DELAY,
            "retry_exponential_backoff": RETRY_BACKOFF_MULTIPLIER,
        },
    ) as dag:

        @task(task_id=OPEN_TASK)
        def open_pipeline_run() -> str:
            reason = _open_reason(plan, float(plan["catch_up_hours"]))
            return run_pdmflow("pipeline-run", ["open", *config, "--reason", reason])

        @task
        def ingest(parent: str) -> str:
            return run_pdmflow("ingest", [*config, "--parent-run-id", parent], parent)

        @task
        def features(parent: str, data_uri: str) -> str:
            arguments = [*config, "--parent-run-id", parent, "--data-uri", data_uri]
            return run_pdmflow("features", arguments, parent)

        @task
        def tune(parent: str, features_uri: str) -> str:
            params = get_current_context()["params"]
            arguments = [*config, "--parent-run-id", parent, "--features-uri", features_uri]
            if params.get("n_trials") is not None:
                arguments += ["--n-trials", str(params["n_trials"])]
            if params.get("timeout") is not None:
                arguments += ["--timeout", str(params["timeout"])]
            return run_pdmflow("tune", arguments, parent)

        @task
        def train(parent: str, features_uri: str, tune_run_id: str) -> str:
            arguments = [*config, "--parent-run-id", parent, "--features-uri", features_uri]
            return run_pdmflow("train", [*arguments, "--tune-run-id", tune_run_id], parent)

        @task
        def evaluate(parent: str, train_run_id: str) -> str:
            arguments = [*config, "--parent-run-id", parent, "--train-run-id", train_run_id]
            return run_pdmflow("evaluate", arguments, parent)

        @task
        def promote(parent: str, evaluate_run_id: str) -> str:
            arguments = [*config, "--parent-run-id", parent, "--evaluate-run-id", evaluate_run_id]
            return run_pdmflow("promote", arguments, parent)

        # Runs after promote released or was skipped (a gate failed); not after a failed step
        # (that step's last try ended the pipeline run FAILED; the DAG run fails).
        @task(trigger_rule="none_failed")
        def close_pipeline_run() -> str:
            parent = get_current_context()["ti"].xcom_pull(task_ids=OPEN_TASK)
            if not parent:
                raise AirflowSkipException("no pipeline run was opened (open was skipped)")
            return run_pdmflow("pipeline-run", ["close", *config, "--run-id", parent])

        parent = open_pipeline_run()
        data_uri = ingest(parent)
        features_uri = features(parent, data_uri)
        tune_run_id = tune(parent, features_uri)
        train_run_id = train(parent, features_uri, tune_run_id)
        evaluate_run_id = evaluate(parent, train_run_id)
        promote(parent, evaluate_run_id) >> close_pipeline_run()
    return dag


def tenant_dags(configs_dir: Path = CONFIGS_DIR) -> dict[str, DAG]:
    """A DAG per tenant YAML in the folder; a file that does not parse is logged and left out,
    so one broken tenant does not take the others' DAGs down (pdmflow validates each config
    fully when its run opens)."""
    dags: dict[str, DAG] = {}
    seen: dict[str, Path] = {}
    for path in sorted(configs_dir.glob("*.yaml")):
        try:
            document = yaml.safe_load(path.read_text())
            tenant_id = str(document["tenant_id"])
            if tenant_id in seen:
                raise ValueError(f"tenant '{tenant_id}' is in {seen[tenant_id]} too")
            dag = build_dag(path.resolve(), tenant_id, tenant_schedule(document.get("schedule")))
        except Exception as error:  # noqa: BLE001 - any broken file: logged, left out
            log.error("pdmflow tenant config %s: no DAG: %s", path, error)
            continue
        seen[tenant_id] = path
        dags[dag.dag_id] = dag
    return dags


# Airflow collects the DAG objects found at module level.
globals().update(tenant_dags())
