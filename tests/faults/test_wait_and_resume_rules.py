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
