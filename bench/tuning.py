"""Trials per minute of `tune` with 1 and with 2 workers on the same data and trial budget, and
the share of trial time spent in MLflow logging.

One ingest and one features run (each its own process, chained through "latest" into a fresh
SQLite tracking store in a temp dir), then `python -m pdmflow.cli tune --workers N` for each N,
its study in a temporary PostgreSQL database created and dropped here
(PDMFLOW_BENCH_POSTGRES_URL, default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres).
Trials per minute count finished trials (complete + pruned) over the tune run's
`tuning_seconds` (worker start-up included: a process start is seconds) and, "trials only",
over the span from the first trial's start to the last trial's end. The workers' seeds differ,
so the trials differ too (and pruning with them).

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

import optuna
import sqlalchemy as sa
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
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


def trials_span(study: optuna.Study) -> float:
    """Seconds from the first trial's start to the last trial's end (worker start-up excluded)."""
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    start = min(t.datetime_start for t in trials)
    return (max(t.datetime_complete for t in trials) - start).total_seconds()


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
                study = optuna.load_study(study_name=run.data.params["study_name"], storage=storage)
                rows.append((workers, wall, run.data.metrics, trials_span(study)))
                shown = {k: round(v, 3) for k, v in rows[-1][2].items() if "trial" in k}
                print(f"tune --workers {workers}: {wall:.0f} s {shown}", file=sys.stderr)
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
        "| trials/min, trials only | vs 1 worker | MLflow logging share |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    rates = [
        (
            metrics["trials_per_minute"],
            60 * (metrics["trials_complete"] + metrics["trials_pruned"]) / span,
        )
        for _, _, metrics, span in rows
    ]
    for (workers, wall, metrics, _), (rate, trials_only) in zip(rows, rates, strict=True):
        print(
            f"| {workers} | {metrics['trials_complete']:.0f} | {metrics['trials_pruned']:.0f} "
            f"| {wall:.1f} | {metrics['tuning_seconds']:.1f} | {rate:.2f} "
            f"| {rate / rates[0][0]:.2f}x | {trials_only:.2f} | {trials_only / rates[0][1]:.2f}x "
            f"| {100 * metrics['trial_log_share']:.1f} % |"
        )


if __name__ == "__main__":
    main()
