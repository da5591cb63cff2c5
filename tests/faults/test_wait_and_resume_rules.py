"""The rules behind the fault handling, without servers: how long pdmflow waits, and when
there is nothing to resume."""

from __future__ import annotations

from conftest import SMOKE

from pdmflow import cli
from pdmflow.tracking import retry_delays


def test_the_wait_is_bounded_by_max_wait_seconds():
    assert retry_delays(300) == [5, 10, 20, 40, 60, 60, 60, 45]  # "retry 3 of 8 in 20 s"
    assert sum(retry_delays(7.5)) == 7.5
    assert retry_delays(0) == []


def test_resume_with_no_pipeline_run_is_one_line_and_exit_2(tracking_store, capsys):
    assert cli.run(["main", "--config", str(SMOKE), "--resume"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "pdmflow main: error: nothing to resume: no pipeline run in experiment "
        "'pdmflow-smoke'; run `pdmflow main` without --resume"
    )


def test_auto_resume_continues_only_a_run_started_since_the_retrain_began(tracking_store):
    """A scheduler retry passes its retrain's start: an older failed pipeline (older data) is
    not continued, one the retried attempt started is."""
    import mlflow
    import pandas as pd

    from pdmflow.config import load_config
    from pdmflow.tracking import resumable_pipeline_run as _resumable
    from pdmflow.tracking import step_run

    config = load_config(SMOKE)
    with step_run(config, "main") as run:  # a pipeline run that then failed
        pass
    mlflow.MlflowClient().set_terminated(run.info.run_id, "FAILED")
    started = pd.Timestamp(mlflow.get_run(run.info.run_id).info.start_time, unit="ms", tz="UTC")
    before, after = started - pd.Timedelta(seconds=5), started + pd.Timedelta(seconds=5)
    assert _resumable(config, "auto", before.isoformat()).info.run_id == run.info.run_id
    assert _resumable(config, "auto", after.isoformat()) is None
    assert _resumable(config, "auto").info.run_id == run.info.run_id
