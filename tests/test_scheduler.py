"""scheduler.py over a fleet: cadences, catch-up, monitoring, retries, locks, state, SIGTERM.

The child command is a tiny fake `pdmflow` (it records its arguments next to the tenant's
config and exits with the status the test planned) wherever the real pipeline is not the point;
`schedule` jobs are real, with a clock the test moves.
"""

import datetime as dt
import importlib.util
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import schedule
from conftest import REPO

from pdmflow.cli import _print_status as print_status
from pdmflow.config import load_config
from pdmflow.errors import ConfigError, TrackingUnreachable
from pdmflow.scheduling import (
    LOCKED_EXIT,
    RUN_NOW_REASON,
    Fleet,
    FleetSettings,
    load_tenants,
    scheduler_status_lines,
)

SCHEDULER = REPO / "scheduler.py"
WEDNESDAY_NOON = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)

FAKE_PDMFLOW = """\
import json, sys, time
from pathlib import Path
step, args = sys.argv[1], sys.argv[2:]
config = args[args.index("--config") + 1]
reason = args[args.index("--reason") + 1] if "--reason" in args else None
plan_file = Path(config + ".plan.json")
plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
calls = Path(config + ".calls")
earlier = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
with calls.open("a") as out:
    out.write(json.dumps({"step": step, "reason": reason, "args": args, "at": time.time()}) + "\\n")
statuses = plan.get(step, [0])
status = statuses[min(sum(call["step"] == step for call in earlier), len(statuses) - 1)]
time.sleep(plan.get("sleep", 0))
if step == "monitor" and status == 5:
    print("drift report: ...")
    print("retrain advised: " + plan["advice"])
sys.exit(status)
"""


def _load_scheduler_script():
    spec = importlib.util.spec_from_file_location("scheduler_script", SCHEDULER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scheduler_main = _load_scheduler_script().main


@pytest.fixture
def fake_pdmflow(tmp_path):
    script = tmp_path / "fake_pdmflow.py"
    script.write_text(FAKE_PDMFLOW)
    return (sys.executable, str(script))


@pytest.fixture
def tenant(write_config, tmp_path):
    """Write a tenant config (smoke + schedule) and the fake's plan; return the config path."""

    def make(tenant_id, schedule=None, plan=None, folder="fleet"):
        (tmp_path / folder).mkdir(exist_ok=True)
        overrides = {"tenant_id": tenant_id, "schedule": schedule or {}}
        path = write_config(overrides, name=f"{folder}/{tenant_id}.yaml")
        (tmp_path / folder / f"{tenant_id}.yaml.plan.json").write_text(json.dumps(plan or {}))
        return path

    return make


def calls(config_path):
    log = config_path.with_name(config_path.name + ".calls")
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """One moment for the fleet and for `schedule` (which asks datetime.datetime.now)."""
    frozen = Clock(WEDNESDAY_NOON)

    class FrozenDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            if tz is None:  # schedule keeps naive local times
                return frozen.now.astimezone().replace(tzinfo=None)
            return frozen.now.astimezone(tz)

    fake_module = SimpleNamespace(datetime=FrozenDatetime, timedelta=dt.timedelta, time=dt.time)
    monkeypatch.setattr(schedule, "datetime", fake_module)
    return frozen


def fleet_of(paths, tmp_path, command, clock, **settings):
    settings = {"retries": 0, "backoff_seconds": 0.05, **settings}
    state_dir = str(tmp_path / "state")
    return Fleet(
        load_tenants([str(path) for path in paths]),
        FleetSettings(state_dir=state_dir, pdmflow_command=command, **settings),
        clock=clock,
    )


def state(tmp_path):
    return json.loads((tmp_path / "state" / "scheduler" / "state.json").read_text())


def at(*args):
    return datetime(*args, tzinfo=UTC)


def test_each_tenant_runs_on_its_own_cadence(tenant, tmp_path, fake_pdmflow, clock):
    daily = tenant("daily", {"at": "02:00", "monitor_at": "01:00"})
    weekly = tenant(
        "weekly",
        {"cadence": "weekly", "day": "friday", "at": "04:30", "timezone": "Europe/Berlin"}
        | {"monitor_at": None},
    )
    fleet = fleet_of([daily, weekly], tmp_path, fake_pdmflow, clock)
    jobs = schedule.Scheduler()
    fleet.schedule_jobs(jobs)
    assert fleet.next_runs() == {
        "daily": {"retrain": at(2025, 6, 5, 2, 0), "monitor": at(2025, 6, 5, 1, 0)},
        "weekly": {"retrain": at(2025, 6, 6, 2, 30)},  # Friday 04:30 in Berlin (CEST)
    }
    clock.now = at(2025, 6, 5, 1, 0, 30)
    fleet.tick(jobs)
    assert fleet.wait_idle(30)
    clock.now = at(2025, 6, 5, 2, 0, 30)
    fleet.tick(jobs)
    assert fleet.wait_idle(30)
    assert [(c["step"], c["reason"]) for c in calls(daily)] == [
        ("monitor", None),
        ("main", "schedule: daily 02:00 UTC"),
    ]
    assert calls(weekly) == []
    assert fleet.next_runs()["daily"]["retrain"] == at(2025, 6, 6, 2, 0)
    clock.now = at(2025, 6, 6, 2, 30, 30)
    fleet.tick(jobs)
    assert fleet.wait_idle(30)
    assert [c["reason"] for c in calls(weekly)] == ["schedule: weekly friday 04:30 Europe/Berlin"]
    assert fleet.next_runs()["weekly"]["retrain"] == at(2025, 6, 13, 2, 30)


def test_a_failing_tenant_does_not_delay_another(tenant, tmp_path, fake_pdmflow, clock, caplog):
    caplog.set_level(logging.INFO, "pdmflow.scheduler")
    failing = tenant("failing", {"monitor_at": None}, plan={"main": [1]})
    healthy = tenant("healthy", {"monitor_at": None})
    fleet = fleet_of(
        [failing, healthy], tmp_path, fake_pdmflow, clock, retries=2, backoff_seconds=1
    )
    jobs = schedule.Scheduler()
    fleet.schedule_jobs(jobs)
    clock.now = at(2025, 6, 5, 2, 0, 30)
    fleet.tick(jobs)
    fleet.runners["healthy"].thread.join(30)
    assert fleet.runners["failing"].thread.is_alive()  # still retrying (1 s, then 2 s)
    assert not fleet.runners["failing"].trigger("retrain", "again")
    assert "failing: still running, skipping this retrain trigger" in caplog.text
    assert fleet.wait_idle(60)
    first, second, third = calls(failing)
    (done,) = calls(healthy)
    assert done["at"] < second["at"]  # it did not wait for the failing tenant's retries
    assert third["at"] - first["at"] >= 3.0
    assert (
        "failing: retrying in 1 s" in caplog.text
        and "failing: retrain attempt 3 of 3" in caplog.text
    )
    tenants = state(tmp_path)["tenants"]
    assert tenants["failing"]["last_retrain"]["outcome"] == "failed exit 1"
    assert tenants["failing"]["last_retrain"]["attempts"] == 3
    assert tenants["healthy"]["last_retrain"]["outcome"] == "released"


def test_tracking_outage_is_retried_verdicts_are_not(tenant, tmp_path, fake_pdmflow):
    unreachable = tenant("unreachable", plan={"main": [4, 0]})
    bad_input = tenant("bad_input", plan={"main": [2]})
    rejected = tenant("rejected", plan={"main": [3]})
    real_time = lambda: datetime.now(UTC)  # noqa: E731
    fleet = fleet_of(
        [unreachable, bad_input, rejected], tmp_path, fake_pdmflow, real_time, retries=2
    )
    assert fleet.run_now() == 2  # the worst: bad input beats a gate rejection and a success
    assert [len(calls(path)) for path in (unreachable, bad_input, rejected)] == [2, 1, 1]
    # The retry continues the failed pipeline from its first unfinished step.
    first, retry = calls(unreachable)
    assert "--resume" not in first["args"]
    # ... and only a pipeline run this retrain started (not an older failed one).
    assert retry["args"][-4:-1] == ["--resume", "auto", "--resume-since"]
    started = state(tmp_path)["tenants"]["unreachable"]["last_retrain"]["started_at"]
    assert retry["args"][-1] == started
    assert TrackingUnreachable.exit_code == 4
    outcomes = {t: e["last_retrain"]["outcome"] for t, e in state(tmp_path)["tenants"].items()}
    assert outcomes == {
        "unreachable": "released",
        "bad_input": "failed exit 2",
        "rejected": "rejected by gates",
    }


def test_catch_up_runs_once_for_a_recent_miss_and_skips_an_old_one(
    tenant, tmp_path, fake_pdmflow, clock, caplog
):
    caplog.set_level(logging.INFO, "pdmflow.scheduler")
    recent = tenant("recent", {"at": "02:00", "catch_up_hours": 48, "monitor_at": None})
    old = tenant(
        "old",
        {"cadence": "weekly", "day": "monday", "catch_up_hours": 24, "monitor_at": None},
    )
    new = tenant("new", {"monitor_at": None})
    state_file = tmp_path / "state" / "scheduler" / "state.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text(
        json.dumps(
            {
                "tenants": {
                    "recent": {"last_retrain": {"started_at": "2025-06-01T02:00:05+00:00"}},
                    "old": {"last_retrain": {"started_at": "2025-05-19T02:00:00+00:00"}},
                }
            }
        )
    )
    fleet = fleet_of([recent, old, new], tmp_path, fake_pdmflow, clock)
    fleet.start(schedule.Scheduler())
    assert fleet.wait_idle(30)
    assert [c["reason"] for c in calls(recent)] == ["catch-up: missed 2025-06-04 02:00 UTC"]
    assert "(2 older missed slot(s) not run)" in caplog.text
    assert calls(old) == [] and calls(new) == []  # new: nothing on record, nothing missed
    assert (
        "old: missed 2 retrain slot(s), the last due 2025-06-02 02:00 UTC, more than "
        "schedule.catch_up_hours (24 h) ago: skipped" in caplog.text
    )
    # A restart an hour later: the catch-up is on record, nothing runs twice.
    clock.now += timedelta(hours=1)
    restarted = fleet_of([recent, old, new], tmp_path, fake_pdmflow, clock)
    restarted.start(schedule.Scheduler())
    assert restarted.wait_idle(30)
    assert len(calls(recent)) == 1 and calls(old) == [] and calls(new) == []


def test_schedule_cron_fires_the_retrain_and_decides_the_catch_up(
    tenant, tmp_path, fake_pdmflow, clock, caplog
):
    caplog.set_level(logging.INFO, "pdmflow.scheduler")
    # Sundays 03:00 in Berlin, as the Airflow DAG reads it; cadence and at are overridden.
    sunday = {"cron": "0 3 * * sun", "timezone": "Europe/Berlin", "monitor_at": None}
    weekly = tenant("weekly", sunday | {"cadence": "daily", "at": "02:00"})
    hourly = tenant("hourly", {"cron": "15 * * * *", "catch_up_hours": 2, "monitor_at": None})
    state_file = tmp_path / "state" / "scheduler" / "state.json"
    state_file.parent.mkdir(parents=True)
    # hourly last ran at 08:15: three slots missed by noon, the newest (11:15) within 2 h.
    last = {"hourly": {"last_retrain": {"started_at": "2025-06-04T08:15:02+00:00"}}}
    state_file.write_text(json.dumps({"tenants": last}))
    fleet = fleet_of([weekly, hourly], tmp_path, fake_pdmflow, clock)
    jobs = schedule.Scheduler()
    fleet.start(jobs)
    assert fleet.wait_idle(30)
    assert [c["reason"] for c in calls(hourly)] == ["catch-up: missed 2025-06-04 11:15 UTC"]
    assert "(2 older missed slot(s) not run)" in caplog.text
    assert calls(weekly) == []  # nothing on record: nothing to catch up
    assert fleet.next_runs() == {
        "weekly": {"retrain": at(2025, 6, 8, 1, 0)},  # Sunday 03:00 CEST, not daily 02:00
        "hourly": {"retrain": at(2025, 6, 4, 12, 15)},
    }
    assert state(tmp_path)["tenants"]["weekly"]["schedule"] == "cron 0 3 * * sun Europe/Berlin"
    clock.now = at(2025, 6, 5, 2, 0, 30)  # the cadence's daily 02:00: no longer a slot
    fleet.tick(jobs)
    assert fleet.wait_idle(30)
    assert calls(weekly) == []
    clock.now = at(2025, 6, 8, 1, 0, 30)
    fleet.tick(jobs)
    assert fleet.wait_idle(30)
    assert [c["reason"] for c in calls(weekly)] == ["schedule: cron 0 3 * * sun Europe/Berlin"]
    assert fleet.next_runs()["weekly"]["retrain"] == at(2025, 6, 15, 1, 0)


def test_a_schedule_cron_that_is_not_five_cron_fields_is_a_config_error(tenant):
    for wrong in ("0 3 * *", "0 3 * * sun 2025", "61 3 * * *", "at three"):
        with pytest.raises(ConfigError) as error:
            load_config(tenant("wrong", {"cron": wrong}))
        message = str(error.value)
        assert "schedule.cron" in message and "5-field cron expression" in message, message
        assert "\n" not in message


def test_monitor_advising_a_retrain_passes_its_reason_on(tenant, tmp_path, fake_pdmflow, clock):
    advice = "drift in vibration (PSI 0.31 > 0.20)"
    drifting = tenant("drifting", plan={"monitor": [5], "advice": advice})
    unreleased = tenant("unreleased", plan={"monitor": [2]})  # no Production model yet
    fleet = fleet_of([drifting, unreleased], tmp_path, fake_pdmflow, clock, retries=2)
    jobs = schedule.Scheduler()
    fleet.schedule_jobs(jobs)
    clock.now = at(2025, 6, 5, 1, 0, 30)
    fleet.tick(jobs)
    assert fleet.wait_idle(30)
    assert [(c["step"], c["reason"]) for c in calls(drifting)] == [
        ("monitor", None),
        ("main", advice),
    ]
    assert [c["step"] for c in calls(unreleased)] == ["monitor"]  # 2 is a verdict: no retry
    tenants = state(tmp_path)["tenants"]
    assert tenants["drifting"]["last_monitor"]["outcome"] == "retrain advised"
    assert tenants["drifting"]["last_monitor"]["reason"] == advice
    assert tenants["drifting"]["last_retrain"]["reason"] == advice
    assert tenants["unreleased"]["last_monitor"]["outcome"] == "monitor failed exit 2"
    assert "last_retrain" not in tenants["unreleased"]


def test_state_file_records_each_tenant_and_status_prints_it(
    tenant, tmp_path, fake_pdmflow, clock, monkeypatch, capsys
):
    released = tenant("released")
    rejected = tenant(
        "rejected", {"at": "04:00", "timezone": "Europe/Berlin", "monitor_at": None}, {"main": [3]}
    )
    state_file = tmp_path / "state" / "scheduler" / "state.json"
    assert scheduler_status_lines("released", state_file) == []  # no scheduler, no lines
    fleet = fleet_of([released, rejected], tmp_path, fake_pdmflow, clock)
    jobs = schedule.Scheduler()
    fleet.start(jobs)
    for hour in (1, 2):  # the UTC tenant's monitor, then both retrains (04:00 Berlin = 02:00)
        clock.now = at(2025, 6, 5, hour, 0, 30)
        fleet.tick(jobs)
        assert fleet.wait_idle(30)
    recorded = state(tmp_path)
    assert recorded["pid"] == os.getpid() and recorded["mode"] == "serve"
    assert recorded["updated_at"] == "2025-06-05T02:00:30+00:00"
    entry = recorded["tenants"]["released"]
    assert entry["schedule"] == "daily 02:00 UTC" and entry["config"] == str(released)
    assert entry["last_monitor"]["outcome"] == "monitor ok"
    assert entry["last_retrain"] == {
        "started_at": "2025-06-05T02:00:30+00:00",
        "ended_at": "2025-06-05T02:00:30+00:00",
        "outcome": "released",
        "exit_status": 0,
        "attempts": 1,
        "reason": "schedule: daily 02:00 UTC",
    }
    assert entry["next_retrain"] == "2025-06-06T02:00:00+00:00"
    other = recorded["tenants"]["rejected"]
    assert other["last_retrain"]["outcome"] == "rejected by gates"
    assert other["next_retrain"] == "2025-06-06T02:00:00+00:00"  # 04:00 in Berlin
    assert "next_monitor" in other and other["next_monitor"] is None
    # A file store: the registry read is real, without SQLite's ~10 s of schema migrations.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("PDMFLOW_SCHEDULER_STATE", str(state_file))
    print_status(load_config(released))  # `pdmflow status` without importing every step
    status = capsys.readouterr()
    assert "pdmflow-smoke-failure: no Production version yet" in status.out, status.err[-2000:]
    assert f"scheduler (daily 02:00 UTC; state {state_file}, pid {os.getpid()}" in status.out
    assert "is the scheduler running?" in status.out  # its heartbeat is from 2025
    assert (
        "  last retrain: released, 2025-06-05 02:00 UTC to 02:00 "
        "(reason: schedule: daily 02:00 UTC)" in status.out
    )
    assert "  last monitor: monitor ok, 2025-06-05 01:00 UTC" in status.out
    assert "  next retrain 2025-06-06 02:00 UTC; next monitor 2025-06-06 01:00 UTC" in status.out


def test_unknown_tenant_or_broken_config_is_one_line_exit_2(tenant, tmp_path, capsys):
    tenant("alpha")
    tenant("beta")
    folder = str(tmp_path / "fleet")
    state_dir = str(tmp_path / "state")
    assert scheduler_main(["--configs", folder, "--tenant", "gamma", "--state-dir", state_dir]) == 2
    err = capsys.readouterr().err
    assert err == "scheduler: error: unknown tenant 'gamma' (the configs hold: alpha, beta)\n"
    broken = tmp_path / "fleet" / "broken.yaml"
    broken.write_text("tenant_id: broken\nexperiment_name: [\n")
    assert scheduler_main(["--configs", folder, "--run-now", "--state-dir", state_dir]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"scheduler: error: config {broken}: ")
    assert not (tmp_path / "state").exists()  # nothing started


def test_run_now_over_a_configs_folder_runs_each_tenant(tenant, tmp_path, fake_pdmflow):
    alpha = tenant("alpha")
    beta = tenant("beta", plan={"main": [3]})
    common = ["--run-now", "--configs", str(tmp_path / "fleet"), "--n-trials", "1"]
    common += ["--pdmflow-command", shlex.join(fake_pdmflow)]
    common += ["--state-dir", str(tmp_path / "state")]
    assert scheduler_main(common) == 3  # beta's gate rejection is the worst
    for path in (alpha, beta):
        (call,) = calls(path)
        assert call["reason"] == RUN_NOW_REASON
        assert call["args"][-2:] == ["--n-trials", "1"]
    assert scheduler_main([*common, "--tenant", "alpha"]) == 0
    assert len(calls(alpha)) == 2 and len(calls(beta)) == 1
    assert state(tmp_path)["tenants"]["alpha"]["last_retrain"]["outcome"] == "released"


def test_a_tenant_locked_by_another_process_is_skipped(tenant, tmp_path, fake_pdmflow, caplog):
    caplog.set_level(logging.INFO, "pdmflow.scheduler")
    config = tenant("alpha")
    lock = tmp_path / "state" / "locks" / "alpha.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "handle = open(sys.argv[1], 'a+'); fcntl.flock(handle, fcntl.LOCK_EX)\n"
            "handle.write(str(os.getpid())); handle.flush(); print('held', flush=True)\n"
            "time.sleep(120)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    command = ["--run-now", "--config", str(config), "--state-dir", str(tmp_path / "state")]
    command += ["--pdmflow-command", shlex.join(fake_pdmflow)]
    try:
        assert holder.stdout.readline().strip() == "held"
        assert scheduler_main(command) == LOCKED_EXIT
        assert f"another retrain holds {lock} (pid {holder.pid})" in caplog.text
        assert calls(config) == []  # it never started a pipeline
        outcome = state(tmp_path)["tenants"]["alpha"]["last_retrain"]["outcome"]
        assert outcome == "skipped: locked"
    finally:
        holder.kill()  # a crashed holder: the kernel releases its lock
        holder.wait()
    assert scheduler_main(command) == 0
    assert len(calls(config)) == 1


def test_sigterm_stops_the_loop_and_its_running_children(tenant, tmp_path, fake_pdmflow):
    # Due an hour ago and not run since yesterday: it starts at once as a catch-up.
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    due = an_hour_ago.strftime("%H:%M")
    config = tenant("alpha", {"at": due, "monitor_at": None}, plan={"sleep": 120})
    state_file = tmp_path / "state" / "scheduler" / "state.json"
    state_file.parent.mkdir(parents=True)
    yesterday = (datetime.now(UTC) - timedelta(hours=30)).isoformat()
    state_file.write_text(
        json.dumps({"tenants": {"alpha": {"last_retrain": {"started_at": yesterday}}}})
    )
    process = subprocess.Popen(
        [sys.executable, str(SCHEDULER), "--config", str(config)]
        + ["--state-dir", str(tmp_path / "state"), "--pdmflow-command", shlex.join(fake_pdmflow)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    line = ""
    while "next retrain" not in line and time.monotonic() < deadline:
        line = process.stderr.readline()
    # From the same instant as `due`: a clock read here may have crossed a minute.
    tomorrow = an_hour_ago + timedelta(days=1)
    assert f"alpha: next retrain {tomorrow:%Y-%m-%d %H:%M} UTC" in line
    while not calls(config) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert calls(config)[0]["reason"].startswith("catch-up: missed ")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr[-2000:]
    assert time.monotonic() - started < 20  # it did not wait for the 120 s child
    assert "scheduler stopped" in stderr
    entry = json.loads(state_file.read_text())["tenants"]["alpha"]
    assert entry["last_retrain"]["outcome"] == f"stopped (exit -{signal.SIGTERM.value})"
    assert entry["running"] is None
