"""A real `mlflow server` on a fresh PostgreSQL database; the smoke pipeline over HTTP.

The server is the same command the compose file's `mlflow` service runs. The PostgreSQL URL
comes from PDMFLOW_TEST_POSTGRES_URL (default: trust auth on 127.0.0.1:5432). With no server
the test skips with the reason, except under CI=true, where it fails.
"""

import pytest
import sqlalchemy as sa
from conftest import SMOKE, cli
from mlflow import MlflowClient
from servers import mlflow_server, new_database
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=120)]


@pytest.fixture(scope="module")
def postgres_database():
    """A new database for this module, dropped afterwards."""
    with new_database() as url:
        yield url


@pytest.fixture(scope="module")
def tracking_server(postgres_database, tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    with mlflow_server(postgres_database, root) as uri:
        yield uri, root


def test_smoke_pipeline_over_http_on_postgres(tracking_server, monkeypatch):
    uri, root = tracking_server
    result = cli(
        "main",
        "--config",
        str(SMOKE),
        "--n-trials",
        "2",
        env={"MLFLOW_TRACKING_URI": uri},
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("pdmflow-smoke")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    steps = {
        r.data.tags.get("pdmflow.step") for r in client.search_runs([experiment.experiment_id])
    }
    assert {"main", "ingest", "features", "tune", "train", "evaluate", "promote"} <= steps
    (version,) = client.search_model_versions("name = 'pdmflow-smoke-failure'")
    assert version.current_stage == "Production"
    assert (
        str(client.get_model_version_by_alias("pdmflow-smoke-failure", "champion").version) == "1"
    )
    # Artifacts went through the server into its artifact store, not into the client's cwd.
    assert any((root / "artifacts").rglob("model.onnx"))


def test_sql_source_reads_tables_and_never_logs_the_password(
    postgres_database, write_config, tmp_path
):
    """Ingest from PostgreSQL tables through a URL with a password; the password stays out."""
    from pdmflow.config import load_config
    from pdmflow.data.sources import read_source

    telemetry, events = read_source(load_config(SMOKE))
    engine = sa.create_engine(postgres_database)
    # The tenant's own column names; schema.rename maps them onto pdmflow's.
    telemetry.rename(columns={"device_id": "asset", "temperature": "temp_c"}).to_sql(
        "plant_telemetry", engine, index=False
    )
    events.rename(columns={"device_id": "asset"}).to_sql("plant_failures", engine, index=False)
    engine.dispose()

    secret = "s3cret-pw-7f1c"  # trust auth ignores it; it must still never be logged
    url = make_url(postgres_database).set(password=secret).render_as_string(hide_password=False)
    config = write_config(
        {
            "source": {
                "kind": "sql",
                "url": url,
                "telemetry_table": "plant_telemetry",
                "events_table": "plant_failures",
            },
            "schema": {"rename": {"asset": "device_id", "temp_c": "temperature"}},
        }
    )
    store = tmp_path / "store"
    store.mkdir()
    result = cli(
        "ingest",
        "--config",
        str(config),
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"},
        cwd=store,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert secret not in result.stdout + result.stderr

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("pdmflow-smoke").experiment_id])
    assert run.data.metrics["rows"] == len(telemetry)
    assert run.data.metrics["failures"] == len(events)
    assert run.data.params["source"].endswith("#plant_telemetry")
    assert "***" in run.data.params["source"]
    for path in store.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_hostile_identifier_is_refused_before_any_sql_runs(write_config, tmp_path):
    # Port 1 answers nothing: had anything tried to connect, the error would say so.
    config = write_config(
        {
            "source": {
                "kind": "sql",
                "url": "postgresql+psycopg2://postgres@127.0.0.1:1/x",
                "telemetry_table": "sensors; DROP TABLE x",
            }
        }
    )
    result = cli(
        "ingest",
        "--config",
        str(config),
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "source.telemetry_table 'sensors; DROP TABLE x' is not a plain SQL identifier" in (
        result.stderr
    )
    assert not (tmp_path / "mlflow.db").exists()


def test_sql_source_refuses_a_missing_table(postgres_database, write_config, tmp_path):
    config = write_config(
        {"source": {"kind": "sql", "url": postgres_database, "telemetry_table": "no_such_table"}}
    )
    result = cli(
        "ingest",
        "--config",
        str(config),
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "telemetry table 'no_such_table': not found" in result.stderr


@pytest.fixture(scope="module")
def million_rows(postgres_database):
    """A seeded table of 1,000,000 readings: 2 tenants x 50 machines x 10,000 readings."""
    engine = sa.create_engine(postgres_database)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE SCHEMA plant"))
        connection.execute(sa.text("SELECT setseed(0.42)"))
        connection.execute(
            sa.text("""
            CREATE TABLE plant.sensor_readings AS
            SELECT CASE WHEN d % 2 = 0 THEN 'org_a' ELSE 'org_b' END AS tenant,
                   'M' || lpad(d::text, 3, '0') AS machine,
                   timestamp '2026-01-01' + s * interval '10 minutes' AS ts,
                   70 + 2 * random() + CASE WHEN s % 3000 > 2900 THEN 5 ELSE 0 END AS temperature,
                   0.5 + 0.05 * random() AS vibration,
                   (random() < 0.9) AS pump_on
            FROM generate_series(0, 99) AS d, generate_series(0, 9999) AS s
        """)
        )
        connection.execute(
            sa.text("""
            CREATE TABLE plant.failures AS
            SELECT CASE WHEN d % 2 = 0 THEN 'org_a' ELSE 'org_b' END AS tenant,
                   'M' || lpad(d::text, 3, '0') AS machine,
                   timestamp '2026-01-01' + (3000 * k) * interval '10 minutes' AS failed_at
            FROM generate_series(0, 99) AS d, generate_series(1, 3) AS k
        """)
        )
    yield engine
    engine.dispose()


def test_ingest_a_tenant_date_range_from_a_million_row_table(
    million_rows, postgres_database, write_config, tmp_path
):
    from pdmflow.data.sources import _read_sql

    engine = million_rows
    whole = sa.select(
        sa.Table("sensor_readings", sa.MetaData(), schema="plant", autoload_with=engine)
    )
    table, chunks = _read_sql(engine, whole, chunk_rows=100_000)  # server-side cursor
    assert len(table) == 1_000_000 and chunks == 10
    del table

    devices = ["M000", "M002", "M004", "M005"]  # M005 belongs to org_b: filtered out
    config = write_config(
        {
            "tenant_id": "org_a",
            "source": {
                "kind": "sql",
                "url": postgres_database,
                "telemetry_table": "plant.sensor_readings",
                "events_table": "plant.failures",
                "tenant_column": "tenant",
                "devices": devices,
                "start": "2026-01-20T00:00:00",
                "end": "2026-02-20T00:00:00",
                "chunk_rows": 5000,
            },
            "schema": {
                "device_column": "device_id",
                "time_column": "timestamp",
                "event_time_column": "event_time",
                "continuous_sensors": ["temperature", "vibration"],
                "boolean_sensors": ["pump_on"],
                "rename": {"machine": "device_id", "ts": "timestamp", "failed_at": "event_time"},
            },
        }
    )
    with engine.connect() as connection:
        expected = connection.execute(
            sa.text(
                "SELECT count(*) FROM plant.sensor_readings WHERE tenant = 'org_a' "
                "AND machine IN ('M000', 'M002', 'M004') "
                "AND ts >= '2026-01-20' AND ts < '2026-02-20'"
            )
        ).scalar_one()
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    result = cli("ingest", "--config", str(config), env={"MLFLOW_TRACKING_URI": uri}, cwd=store)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pdmflow-smoke").experiment_id])
    assert run.data.metrics["rows"] == expected == 3 * 31 * 144
    assert run.data.metrics["devices"] == 3
    assert run.data.metrics["failures"] == 3 * 3  # every failure of those machines, any date
