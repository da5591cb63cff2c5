"""PostgreSQL going away in the middle of a chunked SQL read: the backend serving ingest's
server-side cursor is terminated (pg_terminate_backend) while it fetches."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
from conftest import SMOKE, forget_experiment
from mlflow import MlflowClient
from servers import new_database
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.slow

COPIES = 16  # ~130,000 rows: a read of a hundred-odd chunks, long enough to cut in the middle


@pytest.fixture(scope="module")
def plant_database():
    from pdmflow.config import load_config
    from pdmflow.data.sources import read_source

    telemetry, events = read_source(load_config(SMOKE))
    with new_database("pdmflow_faults_sql") as url:
        engine = sa.create_engine(url)
        telemetry.to_sql("plant_telemetry", engine, index=False)
        events.to_sql("plant_failures", engine, index=False)
        others = ", ".join(f'"{c}"' for c in telemetry.columns if c != "device_id")
        with engine.begin() as connection:  # more devices: copies under other names
            connection.execute(
                sa.text(
                    f'INSERT INTO plant_telemetry ("device_id", {others}) '
                    f"SELECT device_id || '-' || k, {others} FROM plant_telemetry, "
                    f"generate_series(1, {COPIES - 1}) AS k"
                )
            )
        engine.dispose()
        yield url, len(telemetry) * COPIES


def terminate_fetching_backend(url: str, stop: threading.Event, killed: list[int]) -> None:
    """Terminate the first backend of the database that is fetching from a cursor."""
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    database = make_url(url).database
    with admin.connect() as connection:
        while not stop.is_set():
            pids = (
                connection.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = :db "
                        "AND pid <> pg_backend_pid() AND query ILIKE 'FETCH FORWARD%'"
                    ),
                    {"db": database},
                )
                .scalars()
                .all()
            )
            if pids:
                connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
                killed.append(pids[0])
                break
            time.sleep(0.005)
    admin.dispose()


def ingest(config, store):
    forget_experiment()
    return subprocess.run(
        [sys.executable, "-m", "pdmflow.cli", "ingest", "--config", str(config)],
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"},
        cwd=store,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_connection_lost_mid_read_is_one_line_nothing_logged_and_a_retry_reads_all(
    plant_database, write_config, tmp_path
):
    url, rows = plant_database
    secret = "s3cret-pw-91ad"  # trust auth ignores it; it must never be shown
    with_password = make_url(url).set(password=secret).render_as_string(hide_password=False)
    config = write_config(
        {
            "source": {
                "kind": "sql",
                "url": with_password,
                "telemetry_table": "plant_telemetry",
                "events_table": "plant_failures",
                "chunk_rows": 1000,
            }
        }
    )
    store = tmp_path / "store"
    store.mkdir()
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=terminate_fetching_backend, args=(url, stop, killed))
    killer.start()
    try:
        lost = ingest(config, store)
    finally:
        stop.set()
        killer.join(30)
    assert killed, "no backend was fetching: the read ended before it could be cut"
    assert lost.returncode == 4, lost.stderr[-3000:]
    assert "Traceback" not in lost.stderr
    last = lost.stderr.strip().splitlines()[-1]
    shown = make_url(with_password).render_as_string(hide_password=True)
    assert last.startswith(
        f"pdmflow ingest: error: database {shown}: connection lost reading table "
        "plant_telemetry after "
    ), last
    assert "nothing was ingested" in last
    assert secret not in lost.stdout + lost.stderr
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pdmflow-smoke")
    (failed,) = client.search_runs([experiment.experiment_id])
    assert failed.info.status == "FAILED"
    assert failed.inputs.dataset_inputs == []  # nothing logged as a dataset
    assert client.list_artifacts(failed.info.run_id) == []

    # The database is fine again: a retry reads every row, from the start.
    retry = ingest(config, store)
    assert retry.returncode == 0, retry.stderr[-3000:]
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    assert runs[0].data.metrics["rows"] == rows
