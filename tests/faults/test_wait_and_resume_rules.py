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


def test_resume_reads_the_steps_of_a_pipeline_run_made_before_the_steps_tag(tracking_store):
    """Earlier versions left a tag per step (pdmflow.step_run.<step>, pdmflow.output.<step>);
    a resume after an upgrade reads them as it reads the one pdmflow.steps tag."""
    import mlflow

    from pdmflow.config import load_config
    from pdmflow.tracking import (
        STEPS_TAG,
        finished_steps,
        recorded_steps,
        resumable_pipeline_run,
        step_run,
        steps_tag_value,
    )

    config = load_config(SMOKE)
    ingest = {"run_id": "a" * 32, "output": f"runs:/{'a' * 32}/dataset"}
    with step_run(config, "main") as old:  # what an earlier version logged, then died
        mlflow.set_tags(
            {
                "pdmflow.step_run.ingest": ingest["run_id"],
                "pdmflow.output.ingest": ingest["output"],
                "pdmflow.step_run.features": "b" * 32,  # started, never gave an output
            }
        )
    mlflow.MlflowClient().set_terminated(old.info.run_id, "FAILED")
    earlier = resumable_pipeline_run(config, "true")
    assert earlier.info.run_id == old.info.run_id
    assert recorded_steps(earlier) == {"ingest": ingest, "features": {"run_id": "b" * 32}}
    assert finished_steps(earlier) == {"ingest": ingest}

    # The same record in today's one tag reads back the same.
    with step_run(config, "main") as new:
        mlflow.set_tag(STEPS_TAG, steps_tag_value(recorded_steps(earlier)))
    mlflow.MlflowClient().set_terminated(new.info.run_id, "FAILED")
    assert finished_steps(resumable_pipeline_run(config, "true")) == {"ingest": ingest}
