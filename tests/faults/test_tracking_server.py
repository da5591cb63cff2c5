"""A real `mlflow server` on PostgreSQL, stopped and started again by the test, while pdmflow
steps run against it in their own processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import cli, forget_experiment
from mlflow import MlflowClient
from servers import MlflowServer, new_database

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=110)]

MODEL = "pdmflow-smoke-failure"
ONE_LINE = re.compile(
    r"^pdmflow (\w+): error: tracking server http://[^ ]+ unreachable", re.MULTILINE
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server (one port, one database) per module, started only when a test needs it."""
    with new_database("pdmflow_faults") as database:
        shared = MlflowServer(database, tmp_path_factory.mktemp("tracking-server"))
        try:
            yield shared
        finally:
            shared.stop()


# Starting `mlflow server` takes half a minute on two cores: the tests share one, stop it only
# when they need it gone, and run in the order that needs the fewest restarts.
@pytest.fixture
def stopped(server):
    server.stop()
    return server


@pytest.fixture
def running(server):
    if server.process is None:
        server.start()
    return server


def short_wait(write_config, seconds: float):
    """The smoke config waiting `seconds` for the server; the cheapest evaluation (what the
    fault does is the point here, not the model)."""
    return write_config(
        {
            "tracking": {"max_wait_seconds": seconds},
            "evaluation": {"robustness": False, "shap_rows": 50},
            "gates": {"max_noise_auc_drop": None},
        }
    )


def test_unreachable_server_is_retried_visibly_then_one_line_and_exit_4(
    stopped, write_config, tmp_path
):
    restart = stopped
    # A password in the URL never reaches the terminal.
    uri = restart.url.replace("http://", "http://pdm:s3cret@")
    started = time.monotonic()
    result = cli(
        "ingest",
        "--config",
        str(short_wait(write_config, 6)),
        env={"MLFLOW_TRACKING_URI": uri},
        cwd=tmp_path,
    )
    waited = time.monotonic() - started
    assert result.returncode == 4, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    shown = f"http://pdm:***@127.0.0.1:{restart.port}"
    assert lines[-3:] == [
        f"tracking server {shown} unreachable, retry 1 of 2 in 5 s",
        f"tracking server {shown} unreachable, retry 2 of 2 in 1 s",
        f"pdmflow ingest: error: tracking server {shown} unreachable for 6 s "
        "(tracking.max_wait_seconds): start it, or check MLFLOW_TRACKING_URI, then run again",
    ]
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    # MLflow's own silent retries (minutes by default) are gone: the wait is pdmflow's.
    assert 6 <= waited < 40


def test_debug_adds_the_traceback(stopped, write_config, tmp_path):
    restart = stopped
    result = cli(
        "--debug",
        "ingest",
        "--config",
        str(short_wait(write_config, 0)),
        env={"MLFLOW_TRACKING_URI": restart.url},
        cwd=tmp_path,
    )
    assert result.returncode == 4
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("pdmflow ingest: error: ")


def test_server_lost_during_the_pipeline_stops_it_with_one_line(running, write_config, tmp_path):
    restart = running
    config = short_wait(write_config, 4)
    forget_experiment()
    pipeline = subprocess.Popen(
        [sys.executable, "-m", "pdmflow.cli", "main", "--config", str(config)]
        + ["--n-trials", "2"],
        env={**os.environ, "MLFLOW_TRACKING_URI": restart.url},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = MlflowClient(restart.url)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and pipeline.poll() is None:
            experiment = client.get_experiment_by_name("pdmflow-smoke")
            runs = experiment and client.search_runs(
                [experiment.experiment_id], "tags.`pdmflow.step` = 'tune'"
            )
            if runs:
                break
            time.sleep(0.2)
        assert pipeline.poll() is None, "the pipeline ended before tune began"
        restart.stop()
        _, stderr = pipeline.communicate(timeout=120)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
    assert pipeline.returncode == 4, stderr[-3000:]
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert ONE_LINE.match(last), last
    assert ONE_LINE.match(last).group(1) in ("tune", "train")
    # The server stays down: the next test brings it back while a resume waits for it.


def test_resume_waits_for_the_server_then_continues_from_the_first_unfinished_step(
    stopped, write_config, tmp_path
):
    """After the loss above, with the server still down: `main --resume` waits (one line per
    retry), the server comes back, and the pipeline reuses ingest and features."""
    config = short_wait(write_config, 240)  # only tracking.* differs: resuming is allowed
    forget_experiment()
    resume = subprocess.Popen(
        [sys.executable, "-m", "pdmflow.cli", "main", "--config", str(config)]
        + ["--n-trials", "2", "--resume"],
        env={**os.environ, "MLFLOW_TRACKING_URI": stopped.url},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = resume.stderr.readline()
        assert f"tracking server {stopped.url} unreachable, retry 1 of " in first, first
        stopped.start()
        stdout, stderr = resume.communicate(timeout=400)
    finally:
        if resume.poll() is None:
            resume.kill()
    assert resume.returncode in (0, 3), stderr[-3000:]  # released or rejected: it ran to the end
    client = MlflowClient(stopped.url, registry_uri=stopped.url)
    experiment = client.get_experiment_by_name("pdmflow-smoke")
    parent, lost = client.search_runs(
        [experiment.experiment_id],
        "tags.`pdmflow.step` = 'main'",
        order_by=["attributes.start_time DESC"],
    )
    assert lost.info.status == "FAILED"  # left RUNNING by the lost server; ended by the resume
    assert f"resuming pipeline run {lost.info.run_id}: reusing ingest, features" in stdout
    assert parent.data.tags["pdmflow.resumed_from"] == lost.info.run_id
    steps, lost_steps = (json.loads(r.data.tags["pdmflow.steps"]) for r in (parent, lost))
    assert list(lost_steps) == ["ingest", "features"]  # the lost pipeline's finished steps
    for step in ("ingest", "features"):  # reused: the very runs of the lost pipeline
        assert steps[step] == lost_steps[step]
    new_children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags["pdmflow.step"] for r in new_children) == [
        "evaluate",
        "promote",
        "train",
        "tune",
    ]
    # The lost pipeline never reached promote: the one version is the resumed pipeline's.
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    assert version.tags["pdmflow.lineage.ingest_run_id"] == lost_steps["ingest"]["run_id"]

    # Nothing left to resume: one line, exit 2, nothing run.
    again = cli(
        "main",
        "--config",
        str(config),
        "--resume",
        env={"MLFLOW_TRACKING_URI": stopped.url},
        cwd=tmp_path,
    )
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"pdmflow main: error: nothing to resume: the latest pipeline run "
        f"{parent.info.run_id} finished; run `pdmflow main` without --resume"
    )
