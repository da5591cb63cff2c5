"""Start the tracking server that lets no one in: `make server` and the compose `mlflow` service.

    python configs/server/serve.py --backend-store-uri URL [any other `mlflow server` option]

Runs `mlflow server --app-name basic-auth` with basic_auth.ini next to this file (unless
MLFLOW_AUTH_CONFIG_PATH names another). No secret sits in a file or on the command line; the
environment carries them:

  MLFLOW_AUTH_ADMIN_PASSWORD      password of the `admin` account, read on the first start only,
                                  when MLflow creates that account
  MLFLOW_FLASK_SERVER_SECRET_KEY  signs the login page's CSRF token; the same for every worker
  PGHOST PGPORT PGUSER PGPASSWORD the PostgreSQL server, in libpq's own variables; PGPASSWORD also
                                  serves a backend store URL that names no password
  PGDATABASE                      the auth database (accounts and grants), created when missing

The auth database is PostgreSQL's business only: basic_auth.ini names it with an empty URL that
libpq completes from the variables above, so the password is never written anywhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg2
from psycopg2 import errors, sql

REQUIRED = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "PGDATABASE")


def ensure_auth_database(name: str) -> None:
    """Create the auth database when it does not exist (the compose PostgreSQL has only mlflow)."""
    # Host, port, user and password come from PG* variables; `postgres` always exists.
    connection = psycopg2.connect(dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                try:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    print(f"serve: created the auth database {name!r}", file=sys.stderr)
                except errors.DuplicateDatabase:
                    pass  # another server created it a moment ago
    finally:
        connection.close()


def main(argv: list[str]) -> None:
    from mlflow import environment_variables, version

    if not hasattr(environment_variables, "MLFLOW_AUTH_ADMIN_PASSWORD"):
        # Older MLflow creates `admin` with a published default password and ignores ours.
        print(
            f"serve: MLflow {version.VERSION} cannot take the admin password from the "
            "environment: pip install -U 'mlflow[auth]'",
            file=sys.stderr,
        )
        sys.exit(2)
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(f"serve: set {', '.join(missing)} (see configs/server/serve.py)", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault(
        "MLFLOW_AUTH_CONFIG_PATH", str(Path(__file__).resolve().with_name("basic_auth.ini"))
    )
    try:
        ensure_auth_database(os.environ["PGDATABASE"])
    except psycopg2.OperationalError as error:
        # libpq's message names host, port and user, never the password.
        reason = " ".join(str(error).split())
        print(f"serve: cannot reach PostgreSQL for the auth database: {reason}", file=sys.stderr)
        sys.exit(2)
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", *argv]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main(sys.argv[1:])
