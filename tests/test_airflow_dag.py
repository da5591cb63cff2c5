"""The Airflow DAG (orchestration/airflow/pdmflow_dag.py), run end to end by Airflow itself.

Airflow's own environment (`.venv-airflow`, `make airflow-env`) runs `dag.test()` against a
temp Airflow metadata DB (SQLite) and a temp MLflow SQLite store; each task runs pdmflow's real
command line. Outside CI without that environment the test skips, saying how to build it;
under CI=true it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import LENIENT_GATES, REPO, forget_experiment
from mlflow import MlflowClient

from pdmflow.config import load_config
from pdmflow.registry import production_version
from pdmflow.tracking import STEP_TAG, STEPS, recorded_steps

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=360)]

AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
DAG_FOLDER = REPO / "orchestration" / "airflow"
DAG_FILE = DAG_FOLDER / "pdmflow_dag.py"
MODEL = "pdmflow-smoke-failure"

# dag.test() in Airflow's environment; the run's state and each task's state and tries.
RUN_DAG = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("pdmflow_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dag = getattr(module, sys.argv[2])
run = dag.test(run_conf=json.loads(sys.argv[3]))
tasks = {ti.task_id: [str(ti.state), ti.try_number] for ti in run.get_task_instances()}
print("RESULT " + json.dumps({"state": str(run.state), "tasks": tasks}))
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """Airflow's metadata DB, migrated once for this module (each test runs its own DAG)."""
    if not AIRFLOW_PYTHON.exists():
        reason = "Apache Airflow is not installed: `make airflow-env` builds .venv-airflow"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("airflow")
    migrate = subprocess.run(
        [str(AIRFLOW_PYTHON), "-m", "airflow", "db", "migrate"],
        env={**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return home


@pytest.fixture
def airflow(airflow_home, tmp_path, write_config, tracking_store):
    """Airflow's environment on the migrated metadata DB, and two tenants' configs."""
    (tmp_path / "tenants").mkdir()
    # What the DAG does is under test, not the model: the cheapest evaluation.
    smoke = write_config(
        {"gates": LENIENT_GATES, "evaluation": {"robustness": False, "shap_rows": 50}},
        name="tenants/smoke.yaml",
    )
    write_config(
        {
            "tenant_id": "broken",
            "experiment_name": "pdmflow-broken",
            "registered_model_name": "pdmflow-broken-failure",
            "source": {"kind": "csv", "telemetry_path": str(tmp_path / "missing.csv")},
        },
        name="tenants/broken.yaml",
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PDMFLOW_CONFIGS": str(tmp_path / "tenants"),
        # The steps run in tmp_path (./mlruns lands there) with this test's pdmflow.
        "PDMFLOW_PROJECT_DIR": str(tmp_path),
        "PDMFLOW_COMMAND": f"{sys.executable} -m pdmflow.cli",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.getenv("PYTHONPATH")])),
    }
    return {"env": env, "smoke": smoke, "tmp": tmp_path}


def run_dag(airflow, dag_id: str, conf: dict) -> dict:
    forget_experiment()
    started = time.monotonic()
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", RUN_DAG, str(DAG_FILE), dag_id, json.dumps(conf)],
        env=airflow["env"],
        cwd=airflow["tmp"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and results, (done.stdout + done.stderr)[-6000:]
    result = json.loads(results[-1][len("RESULT ") :])
    result["seconds"] = time.monotonic() - started
    result["log"] = done.stdout + done.stderr
    print(f"{dag_id}: {result['state']} in {result['seconds']:.0f} s: {result['tasks']}")
    return result


def pipeline_runs(client: MlflowClient, experiment: str) -> list:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs(
        [experiment_id], f"tags.`{STEP_TAG}` = 'main'", order_by=["attributes.start_time ASC"]
    )


def step_children(client: MlflowClient, parent) -> dict:
    """The parent's child runs by step; exactly one per step."""
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    steps = [run.data.tags[STEP_TAG] for run in runs]
    assert sorted(steps) == sorted(STEPS), steps
    return {run.data.tags[STEP_TAG]: run for run in runs}


def assert_chained(parent, children: dict) -> None:
    """Each step read the output of the step before it in the same pipeline run."""
    ids = {step: run.info.run_id for step, run in children.items()}
    recorded = recorded_steps(parent)  # the one pdmflow.steps tag
    for step in STEPS:
        assert children[step].info.status == "FINISHED", step
        assert recorded[step]["run_id"] == ids[step], step
    data_uri, features_uri = f"runs:/{ids['ingest']}/dataset", f"runs:/{ids['features']}/features"
    assert recorded["ingest"]["output"] == data_uri
    assert children["features"].data.params["data_uri"] == data_uri
    assert children["tune"].data.params["features_uri"] == features_uri
    assert children["train"].data.params["features_uri"] == features_uri
    assert children["train"].data.params["params_source"] == f"tune run {ids['tune']}"
    assert children["evaluate"].data.params["train_run_id"] == ids["train"]
    assert children["promote"].data.params["evaluate_run_id"] == ids["evaluate"]


def decoy_runs(client: MlflowClient, experiment: str) -> set[str]:
    """A finished run of every step, dated tomorrow: what "latest" would find first."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    tomorrow = int((time.time() + 86_400) * 1000)
    ids = set()
    for step in STEPS[:-1]:
        run = client.create_run(experiment_id, start_time=tomorrow, tags={STEP_TAG: step})
        client.set_terminated(run.info.run_id, "FINISHED", end_time=tomorrow + 1)
        ids.add(run.info.run_id)
    return ids


def test_the_dag_runs_the_pipeline_under_one_parent_and_releases(airflow):
    client = MlflowClient()

    first = run_dag(airflow, "pdmflow_smoke", {})
    assert first["state"] == "success", first["log"][-6000:]
    assert {task: state for task, (state, _) in first["tasks"].items()} == dict.fromkeys(
        ["open_pipeline_run", *STEPS, "close_pipeline_run"], "success"
    )
    (parent,) = pipeline_runs(client, "pdmflow-smoke")
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["pdmflow.retrain_reason"] == "manual: airflow dags trigger pdmflow_smoke"
    assert (tags["pdmflow.decision"], tags["pdmflow.released_version"]) == ("released", "1")
    assert tags["mlflow.note.content"].startswith("**Released**: version 1")
    assert "auc" in parent.data.metrics  # the headline metrics, as `main` logs them
    children = step_children(client, parent)
    assert_chained(parent, children)
    assert children["tune"].data.params["n_trials"] == "4"  # the config's tuning.n_trials
    assert str(production_version(MODEL).version) == "1"

    # The second run: a config override, stricter gates, and newer "latest" runs of every
    # step in the store that it must never read.
    decoys = decoy_runs(client, "pdmflow-smoke")
    airflow["smoke"].write_text(airflow["smoke"].read_text().replace("min_auc: 0.5", "min_auc: 1"))
    second = run_dag(airflow, "pdmflow_smoke", {"n_trials": 1, "reason": "test: second run"})
    # A failed gate is a verdict, not a crash: promote skipped, the outcome recorded.
    assert second["state"] == "success", second["log"][-6000:]
    assert second["tasks"]["promote"][0] == "skipped"
    assert second["tasks"]["close_pipeline_run"][0] == "success"
    assert "gate failed, not released: pdmflow promote: error: model " in second["log"]
    first_parent, parent = pipeline_runs(client, "pdmflow-smoke")
    assert first_parent.info.run_id != parent.info.run_id
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["pdmflow.retrain_reason"] == "test: second run"
    assert (tags["pdmflow.decision"], tags["pdmflow.registered_version"]) == ("rejected", "2")
    assert "pdmflow.released_version" not in tags
    children = step_children(client, parent)
    assert_chained(parent, children)
    assert children["tune"].data.params["n_trials"] == "1"  # --conf '{"n_trials": 1}'
    read = {value for run in children.values() for value in run.data.params.values()}
    first_ids = {run.info.run_id for run in step_children(client, first_parent).values()}
    assert not any(run_id in value for value in read for run_id in decoys | first_ids)
    assert str(production_version(MODEL).version) == "1"  # the rejected version 2 is not released
    assert client.get_model_version(MODEL, "2").current_stage == "None"


def test_bad_input_fails_its_task_at_once_and_ends_the_pipeline_run_failed(airflow):
    result = run_dag(airflow, "pdmflow_broken", {})
    assert result["state"] == "failed"
    tasks = result["tasks"]
    assert tasks["open_pipeline_run"] == ["success", 1]
    assert tasks["ingest"] == ["failed", 1]  # exit status 2: not retried
    for task in [*STEPS[1:], "close_pipeline_run"]:
        assert tasks[task][0] == "upstream_failed", task
    assert "pdmflow ingest exited 2: pdmflow ingest: error: " in result["log"]
    assert "(bad input: not retried)" in result["log"]
    (parent,) = pipeline_runs(MlflowClient(), "pdmflow-broken")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["mlflow.note.content"].startswith("**No decision**")


DESCRIBE_DAGS = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("pdmflow_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print("DAGS " + json.dumps({
    dag.dag_id: {
        "cron": dag.timetable.expression,
        "timezone": str(getattr(dag.timetable.timezone, "name", dag.timetable.timezone)),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "retries": {task.task_id: task.retries for task in dag.tasks},
        "tasks": sorted(task.task_id for task in dag.tasks),
    }
    for dag in module.tenant_dags().values()
}))
"""


def test_each_tenant_config_is_a_dag_on_the_schedule_scheduler_py_reads(airflow, write_config):
    tenants = airflow["tmp"] / "tenants"
    (tenants / "broken.yaml").unlink()
    for tenant_id, plan in (
        ("cron", {"cron": "0 3 * * sun", "timezone": "Europe/Berlin", "at": "05:00"}),
        ("weekly", {"cadence": "weekly", "day": "friday", "at": "04:30"}),
    ):
        write_config({"tenant_id": tenant_id, "schedule": plan}, name=f"tenants/{tenant_id}.yaml")
    (tenants / "unreadable.yaml").write_text("tenant_id: [\n")
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", DESCRIBE_DAGS, str(DAG_FILE)],
        env=airflow["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("DAGS ")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-3000:]
    dags = json.loads(lines[-1][len("DAGS ") :])
    assert set(dags) == {"pdmflow_cron", "pdmflow_weekly", "pdmflow_smoke"}  # not unreadable
    assert "pdmflow tenant config" in done.stdout + done.stderr  # ... which is logged
    assert (dags["pdmflow_cron"]["cron"], dags["pdmflow_cron"]["timezone"]) == (
        "0 3 * * sun",
        "Europe/Berlin",
    )
    assert dags["pdmflow_cron"]["cron"] == load_config(tenants / "cron.yaml").schedule.cron
    assert dags["pdmflow_weekly"]["cron"] == "30 4 * * fri"
    assert (dags["pdmflow_smoke"]["cron"], dags["pdmflow_smoke"]["timezone"]) == (
        "0 2 * * *",
        "UTC",
    )
    smoke = dags["pdmflow_smoke"]
    assert smoke["tasks"] == sorted(["open_pipeline_run", *STEPS, "close_pipeline_run"])
    assert (smoke["catchup"], smoke["max_active_runs"]) == (False, 1)
    assert set(smoke["retries"].values()) == {2}  # scheduler.py's --retries default
