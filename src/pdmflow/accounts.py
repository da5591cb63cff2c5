"""Accounts on the tracking server that lets no one in: each tenant on its own things only.

    MLFLOW_TRACKING_URI=http://host:5000 MLFLOW_TRACKING_USERNAME=admin \\
    MLFLOW_TRACKING_PASSWORD=... PDMFLOW_TRACKING_PASSWORD=... \\
        python -m pdmflow.accounts --config configs/a.yaml [--config configs/b.yaml ...]

Run as an admin of the server (MLflow's own MLFLOW_TRACKING_USERNAME/PASSWORD). For each tenant
config: the account `tracking.username`, with the password held by the environment variable
`tracking.password_env`; the tenant's experiment and registered model when missing; MANAGE for
that account on both. Nothing more: the server's default is NO_PERMISSIONS, so every other
experiment and model answers 403 to that account.

A second run changes nothing and says so. A password that no longer logs in is set again from
the environment, which is how a password is rotated. Passwords are never printed.

The release lock (`<registered_model_name>.release-lock`, a registered model promotion creates
to take the lock and deletes to give it back) needs no grant from here: with workspaces off any
account may create a registered model, MLflow grants MANAGE to whoever creates one, and deleting
a model drops every grant on its name, so a standing grant would not outlive the first release.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import mlflow
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_TRACKING_USERNAME
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.server.auth.client import AuthServiceClient
from mlflow.server.auth.routes import GET_CURRENT_USER
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

from pdmflow.config import TenantConfig, load_config
from pdmflow.errors import ConfigError, PdmflowError

MANAGE = "MANAGE"


def ensure_tenant(config: TenantConfig, password: str, tracking_uri: str) -> list[str]:
    """Make the tenant's account, experiment, registered model and grants exist.

    Returns what was changed, one line each; empty when everything was already in place.
    """
    auth: AuthServiceClient = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    username = config.tracking.username
    changes = [_ensure_user(auth, tracking_uri, username, password, config.tracking.password_env)]
    experiment_id, created = _ensure_experiment(client, config.experiment_name)
    changes.append(created)
    changes.append(_ensure_registered_model(client, config.registered_model_name))
    for resource_type, resource_id, label in (
        ("experiment", experiment_id, f"experiment '{config.experiment_name}'"),
        (
            "registered_model",
            config.registered_model_name,
            f"registered model '{config.registered_model_name}'",
        ),
    ):
        if _ensure_manage(auth, username, resource_type, resource_id):
            changes.append(f"granted '{username}' {MANAGE} on {label}")
    return [change for change in changes if change]


def _ensure_user(
    auth: AuthServiceClient, tracking_uri: str, username: str, password: str, password_env: str
) -> str | None:
    try:
        user = auth.get_user(username)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        _with_password_check(password_env, lambda: auth.create_user(username, password))
        return f"created account '{username}'"
    if user.is_admin:
        raise ConfigError(
            f"account '{username}' is an admin of {tracking_uri}; a tenant's account must not "
            "be one: choose another tracking.username"
        )
    if _logs_in(tracking_uri, username, password):
        return None
    _with_password_check(password_env, lambda: auth.update_user_password(username, password))
    return f"set the password of account '{username}' from {password_env} (the old one differed)"


def _with_password_check(password_env: str, call: Callable[[], object]) -> None:
    try:
        call()
    except MlflowException as error:
        if error.error_code != "INVALID_PARAMETER_VALUE":
            raise
        raise ConfigError(f"the password in {password_env} is refused: {error.message}") from None


def _logs_in(tracking_uri: str, username: str, password: str) -> bool:
    """Whether `username` logs in with `password` (a request as that account, not as admin)."""
    creds = MlflowHostCreds(tracking_uri, username=username, password=password)
    response = http_request(creds, GET_CURRENT_USER, "GET")
    if response.status_code not in (200, 401):
        raise MlflowException(f"{GET_CURRENT_USER} answered HTTP {response.status_code}")
    return response.status_code == 200


def _ensure_experiment(client: MlflowClient, name: str) -> tuple[str, str | None]:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name), f"created experiment '{name}'"
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(
            f"experiment '{name}' is deleted: restore it (mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}) or choose another experiment_name"
        )
    return experiment.experiment_id, None


def _ensure_registered_model(client: MlflowClient, name: str) -> str | None:
    try:
        client.get_registered_model(name)
        return None
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    client.create_registered_model(name)
    return f"created registered model '{name}'"


def _ensure_manage(
    auth: AuthServiceClient, username: str, resource_type: str, resource_id: str
) -> bool:
    """Grant MANAGE unless the account already has it; True when something was granted."""
    if auth.get_user_permission(username, resource_type, resource_id).permission == MANAGE:
        return False
    try:
        auth.grant_user_permission(username, resource_type, resource_id, MANAGE)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # A lesser grant (READ, EDIT, DENY) is in the way: replace it.
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, MANAGE)
    return True


def _tenant_password(config: TenantConfig, path: str) -> str:
    if config.tracking.username is None:
        raise ConfigError(
            f"{path}: tracking.username is not set; an account needs one "
            "(tracking: {username: ..., password_env: ...})"
        )
    password = os.environ.get(config.tracking.password_env)
    if not password:
        raise ConfigError(
            f"{path}: the environment variable {config.tracking.password_env} "
            f"(tracking.password_env) holding the password of '{config.tracking.username}' "
            "is not set"
        )
    return password


def _server_uri() -> str:
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"MLFLOW_TRACKING_URI is {uri!r}: set it to the tracking server's http(s) URL"
        )
    return uri


def _explain(error: MlflowException, tracking_uri: str) -> str:
    """The admin's mistake in one line, for the answers that mean one."""
    status = error.get_http_status_code()
    admin = MLFLOW_TRACKING_USERNAME.get()
    if status == 401:
        return (
            f"{tracking_uri} refused the login of '{admin}': set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to an admin account of the server"
        )
    if status == 403:
        return f"account '{admin}' is not an admin of {tracking_uri}: run this as an admin"
    return error.message


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pdmflow.accounts",
        description="Create each tenant's account on the tracking server, with MANAGE on the "
        "tenant's experiment and registered model only (run as a server admin).",
    )
    parser.add_argument(
        "--config", action="append", required=True, help="tenant config YAML (repeatable)"
    )
    args = parser.parse_args(argv)
    tracking_uri = ""
    try:
        tracking_uri = _server_uri()
        # Every config and password is checked before the server is touched.
        tenants = []
        owners: dict[str, str] = {}
        for path in args.config:
            config = load_config(path)
            password = _tenant_password(config, path)
            owner = owners.setdefault(config.tracking.username, config.tenant_id)
            if owner != config.tenant_id:
                raise ConfigError(
                    f"{path}: account '{config.tracking.username}' already belongs to tenant "
                    f"'{owner}'; every tenant needs its own tracking.username"
                )
            tenants.append((config, password))
        changed = 0
        for config, password in tenants:
            changes = ensure_tenant(config, password, tracking_uri)
            changed += len(changes)
            for change in changes:
                print(f"tenant {config.tenant_id}: {change}")
            if not changes:
                print(
                    f"tenant {config.tenant_id}: unchanged (account '{config.tracking.username}' "
                    f"with {MANAGE} on experiment '{config.experiment_name}' and registered model "
                    f"'{config.registered_model_name}')"
                )
        print(f"{changed} change(s) on {tracking_uri}" if changed else "nothing to change")
    except PdmflowError as error:
        print(f"pdmflow accounts: error: {error}", file=sys.stderr)
        return error.exit_code
    except MlflowException as error:
        print(f"pdmflow accounts: error: {_explain(error, tracking_uri)}", file=sys.stderr)
        return 2
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
