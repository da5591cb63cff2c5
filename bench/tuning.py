"""Trials per minute of `tune` with 1 and with 2 workers on the same data and trial budget, and
the share of trial time spent in MLflow logging.

One ingest and one features run (each its own process, chained through "latest" into a fresh
SQLite tracking store in a temp dir), then `python -m pdmflow.cli tune --workers N` for each N,
its study in a temporary PostgreSQL database created and dropped here
(PDMFLOW_BENCH_POSTGRES_URL, default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres).
Trials per minute count finished trials (complete + pruned) over the tune run's
`tuning_seconds`: from the study's first trial to the last worker's exit, worker start-up
included. The workers' seeds differ, so the trials differ too (and pruning with them).

    python bench/tuning.py [--config configs/default.yaml] [--n-trials 20] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
import yaml
from mlflow import MlflowClient
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "PDMFLOW_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def cli(step: str, config: Path, extra: list[str], env: dict[str, str], cwd: str):
    """Run one step as its own process; return (stdout, wall seconds)."""
    command = [sys.executable, "-m", "pdmflow.cli", step, "--config", str(config), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{step} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    # Terminated, still drop the database (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/tuning.py: terminated"))
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    database = f"pdmflow_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
    storage = make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)
    load = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as store:
            tracking_uri = f"sqlite:///{store}/mlflow.db"
            env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
            env["PYTHONPATH"] = str(REPO / "src")
            env.pop("MLFLOW_RUN_ID", None)
            config = Path(store) / "tenant.yaml"
            settings = yaml.safe_load(args.config.read_text())
            settings["tuning"] = {**settings.get("tuning", {}), "storage": storage}
            config.write_text(yaml.safe_dump(settings))
            cli("ingest", config, [], env, store)
            cli("features", config, [], env, store)
            rows = []
            for workers in args.workers:
                extra = ["--n-trials", str(args.n_trials), "--workers", str(workers)]
                stdout, wall = cli("tune", config, [*extra, "--timeout", "36000"], env, store)
                run = MlflowClient(tracking_uri).get_run(stdout.strip().splitlines()[-1])
                rows.append((workers, wall, run.data.metrics))
                print(f"tune --workers {workers}: {wall:.0f} s", file=sys.stderr, flush=True)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()

    shown = args.config.resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
    print(
        f"config: {shown}   trials: {args.n_trials}   cores: {os.cpu_count()}   "
        f"load average at start: {load:.1f}   python {sys.version.split()[0]}"
    )
    print(
        "| workers | complete | pruned | tune wall s | tuning s | trials/min | vs 1 worker "
        "| MLflow logging share |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    base = rows[0][2]["trials_per_minute"]
    for workers, wall, metrics in rows:
        rate = metrics["trials_per_minute"]
        print(
            f"| {workers} | {metrics['trials_complete']:.0f} | {metrics['trials_pruned']:.0f} "
            f"| {wall:.1f} | {metrics['tuning_seconds']:.1f} | {rate:.2f} "
            f"| {rate / base:.2f}x | {100 * metrics['trial_log_share']:.1f} % |"
        )


if __name__ == "__main__":
    main()
