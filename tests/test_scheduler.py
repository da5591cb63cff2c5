"""scheduler.py: a real retrain, the 02:00 schedule, the lock, retries and SIGTERM."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
import schedule
from conftest import REPO, SMOKE, forget_experiment
from mlflow import MlflowClient

from pdmflow.scheduling import LOCKED_EXIT, Retrainer, RetrainSettings

SCHEDULER = str(REPO / "scheduler.py")


def scheduler(*args, env=None, cwd=None, **kwargs):
    forget_experiment()
    return subprocess.Popen(
        [sys.executable, SCHEDULER, *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_run_now_retrains_and_releases(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = scheduler(
        "--run-now",
        "--config",
        str(SMOKE),
        "--n-trials",
        "2",
        "--lock-file",
        str(tmp_path / "retrain.lock"),
        env={"MLFLOW_TRACKING_URI": uri},
        cwd=tmp_path,
    )
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert "retrain finished: released a new model" in stderr
    (version,) = MlflowClient(uri, uri).search_model_versions("name = 'pdmflow-smoke-failure'")
    assert version.current_stage == "Production"


def test_daily_job_is_set_for_0200():
    jobs = schedule.Scheduler()
    job = Retrainer(RetrainSettings()).schedule_daily(jobs)
    assert job.unit == "days" and job.interval == 1
    assert job.at_time == dt.time(2, 0)
    assert job.next_run.time() == dt.time(2, 0)
    other = Retrainer(RetrainSettings(at="04:30", timezone="Europe/Berlin")).schedule_daily(jobs)
    assert other.at_time == dt.time(4, 30)


def test_second_instance_does_not_run_while_the_lock_is_held(tmp_path):
    lock = tmp_path / "retrain.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from pdmflow.scheduling import retrain_lock\n"
            "with retrain_lock(sys.argv[2]):\n print('held', flush=True); time.sleep(120)",
            str(REPO / "src"),
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        second = scheduler(
            "--run-now",
            "--config",
            str(SMOKE),
            "--lock-file",
            str(lock),
            env={"MLFLOW_TRACKING_URI": uri},
            cwd=tmp_path,
        )
        _, stderr = second.communicate(timeout=60)
        assert second.returncode == LOCKED_EXIT
        assert f"another retrain holds {lock} (pid {holder.pid})" in stderr
        assert not (tmp_path / "mlflow.db").exists()  # it never started a pipeline
    finally:
        holder.kill()  # a crashed holder: the kernel releases its lock
        holder.wait()
    third = scheduler(
        "--run-now",
        "--config",
        str(tmp_path / "missing.yaml"),
        "--retries",
        "0",
        "--lock-file",
        str(lock),
        cwd=tmp_path,
    )
    _, stderr = third.communicate(timeout=120)
    assert third.returncode == 2  # it got the lock and ran (into the missing config)
    assert "another retrain" not in stderr


def test_failed_runs_are_retried_with_backoff_then_reported(tmp_path):
    process = scheduler(
        "--run-now",
        "--config",
        str(tmp_path / "missing.yaml"),
        "--retries",
        "2",
        "--backoff-seconds",
        "0.2",
        "--lock-file",
        str(tmp_path / "retrain.lock"),
        cwd=tmp_path,
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.count("file not found") == 3
    assert "retrying in 0 s" in stderr and "attempt 3 of 3" in stderr


def test_sigterm_stops_the_loop_cleanly(tmp_path):
    process = scheduler(
        "--config", str(SMOKE), "--lock-file", str(tmp_path / "retrain.lock"), cwd=tmp_path
    )
    deadline = time.monotonic() + 60
    line = ""
    while "next retrain at" not in line and time.monotonic() < deadline:
        line = process.stderr.readline()
    assert "02:00:00" in line
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "scheduler stopped" in stderr
