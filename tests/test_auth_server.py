"""The tracking server that lets no one in: basic auth on PostgreSQL, one account per tenant.

The server is started by configs/server/serve.py, the command of `make server` and of the
compose file's `mlflow` service, with the shipped configs/server/basic_auth.ini: one fresh
database for the backend store, another for the auth store, every secret in the environment.
With no PostgreSQL the test skips with the reason, except under CI=true, where it fails.
"""

import importlib.util
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from conftest import REPO
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from servers import mlflow_server, new_database
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=55)]

ADMIN_PASSWORD = f"admin-{secrets.token_hex(8)}"
PASSWORDS = {"a": f"tenant-a-{secrets.token_hex(8)}", "b": f"tenant-b-{secrets.token_hex(8)}"}
ROTATED = f"tenant-b-rotated-{secrets.token_hex(8)}"
SECRETS = (ADMIN_PASSWORD, *PASSWORDS.values(), ROTATED)
ACCOUNT_VARIABLES = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    if importlib.util.find_spec("flask_wtf") is None:
        reason = "MLflow's basic-auth app needs mlflow[auth] (Flask-WTF): make server installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("auth-server")
    with new_database() as backend_uri, new_database("pdmflow_auth") as auth_uri:
        auth_db = make_url(auth_uri)
        env = {
            # The auth database in libpq's variables, as in compose: no URL holds a password.
            "PGHOST": auth_db.host or "",
            "PGPORT": str(auth_db.port or 5432),
            "PGUSER": auth_db.username or "",
            "PGPASSWORD": auth_db.password or "",
            "PGDATABASE": auth_db.database,
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            # Background jobs play no part here; they only compete for the CPU.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        launcher = (sys.executable, str(REPO / "configs" / "server" / "serve.py"))
        with mlflow_server(backend_uri, root, env=env, command=launcher) as uri:
            yield uri, root


def tenant_config(write_config, tenant: str):
    return write_config(
        {
            "tenant_id": f"auth_{tenant}",
            "experiment_name": f"auth-{tenant}",
            "registered_model_name": f"auth-{tenant}-failure",
            "tracking": {
                "username": f"tenant-{tenant}",
                "password_env": f"TEST_{tenant.upper()}_PW",
            },
            "evaluation": {"robustness": False},
            "gates": {"max_noise_auc_drop": None},
        },
        name=f"{tenant}.yaml",
    )


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any account on it, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key not in ACCOUNT_VARIABLES}
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    return {**env, **extra}


def accounts_process(uri: str, *configs) -> subprocess.CompletedProcess[str]:
    """`python -m pdmflow.accounts` as an admin would run it, in its own process."""
    args = [arg for config in configs for arg in ("--config", str(config))]
    env = clean_env(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_TRACKING_USERNAME="admin",
        MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD,
        TEST_A_PW=PASSWORDS["a"],
        TEST_B_PW=PASSWORDS["b"],
    )
    return subprocess.run(
        [sys.executable, "-m", "pdmflow.accounts", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def accounts_here(
    monkeypatch, capsys, uri: str, username: str, password: str, *configs, b_password=None
):
    """The same command in this process (one MLflow import less): (exit status, out, err)."""
    from pdmflow.accounts import run

    with monkeypatch.context() as patch:
        for key, value in {
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": password,
            "TEST_A_PW": PASSWORDS["a"],
            "TEST_B_PW": b_password or PASSWORDS["b"],
        }.items():
            patch.setenv(key, value)
        status = run([arg for config in configs for arg in ("--config", str(config))])
    output = capsys.readouterr()
    return status, output.out, output.err


def client_as(monkeypatch, uri: str, username: str, password: str) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def denied(call) -> None:
    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.error_code == "PERMISSION_DENIED", caught.value.message


def test_no_credentials_no_entry(auth_server):
    uri, _ = auth_server
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=10")
    assert caught.value.code == 401
    assert caught.value.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'


def test_each_tenant_on_its_own_things_only(
    auth_server, write_config, tmp_path, monkeypatch, capsys
):
    uri, root = auth_server
    config_a, config_b = tenant_config(write_config, "a"), tenant_config(write_config, "b")

    first = accounts_process(uri, config_a, config_b)
    assert first.returncode == 0, first.stderr[-3000:]
    for tenant in ("a", "b"):
        assert f"tenant auth_{tenant}: created account 'tenant-{tenant}'" in first.stdout
        assert f"granted 'tenant-{tenant}' MANAGE on registered model" in first.stdout
    status, out, err = accounts_here(
        monkeypatch, capsys, uri, "admin", ADMIN_PASSWORD, config_a, config_b
    )
    assert status == 0, err
    assert out.count(": unchanged (") == 2 and out.endswith("nothing to change\n")
    outputs = [first.stdout + first.stderr, out + err]
    # A tenant's account is no admin: it cannot hand out accounts.
    status, out, err = accounts_here(monkeypatch, capsys, uri, "tenant-a", PASSWORDS["a"], config_b)
    assert status == 2
    assert "account 'tenant-a' is not an admin" in err
    outputs.append(out + err)
    # A new password in the tenant's variable: the next run sets it (how passwords rotate).
    status, out, err = accounts_here(
        monkeypatch, capsys, uri, "admin", ADMIN_PASSWORD, config_b, b_password=ROTATED
    )
    assert status == 0, err
    assert "tenant auth_b: set the password of account 'tenant-b' from TEST_B_PW" in out
    outputs.append(out + err)
    client_as(monkeypatch, uri, "tenant-b", ROTATED).get_registered_model("auth-b-failure")

    admin = client_as(monkeypatch, uri, "admin", ADMIN_PASSWORD)
    b_experiment = admin.get_experiment_by_name("auth-b").experiment_id
    b_run = admin.create_run(b_experiment).info.run_id

    tenant_a = client_as(monkeypatch, uri, "tenant-a", PASSWORDS["a"])
    assert [e.name for e in tenant_a.search_experiments()] == ["auth-a"]
    assert [m.name for m in tenant_a.search_registered_models()] == ["auth-a-failure"]
    denied(lambda: tenant_a.get_experiment(b_experiment))
    denied(lambda: tenant_a.get_run(b_run))
    denied(lambda: tenant_a.create_run(b_experiment))
    denied(lambda: tenant_a.log_param(b_run, "planted", "by-a"))
    denied(lambda: tenant_a.get_registered_model("auth-b-failure"))
    denied(lambda: tenant_a.set_registered_model_tag("auth-b-failure", "planted", "by-a"))
    denied(lambda: tenant_a.create_model_version("auth-b-failure", f"runs:/{b_run}/model"))
    # The release lock promotion takes: A creates and removes its own; B cannot remove it.
    lock = "auth-a-failure.release-lock"
    tenant_a.create_registered_model(lock)
    tenant_b = client_as(monkeypatch, uri, "tenant-b", ROTATED)
    denied(lambda: tenant_b.delete_registered_model(lock))
    tenant_a = client_as(monkeypatch, uri, "tenant-a", PASSWORDS["a"])
    tenant_a.delete_registered_model(lock)

    # The pipeline logs in with A's account (tracking.username) and nothing else.
    workdir = tmp_path / "client"
    workdir.mkdir()
    pipeline = subprocess.run(
        [sys.executable, "-m", "pdmflow.cli", "main", "--config", str(config_a), "--n-trials", "1"],
        env=clean_env(MLFLOW_TRACKING_URI=uri, TEST_A_PW=PASSWORDS["a"]),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pipeline.returncode == 0, pipeline.stderr[-3000:]
    admin = client_as(monkeypatch, uri, "admin", ADMIN_PASSWORD)
    (version,) = admin.search_model_versions("name = 'auth-a-failure'")
    assert version.current_stage == "Production"

    # No password reaches a param, a tag, an artifact, the server's log or the output.
    a_experiment = admin.get_experiment_by_name("auth-a").experiment_id
    runs = admin.search_runs([a_experiment])
    assert len(runs) >= 7  # main and its six steps
    for run in runs:
        logged = repr((run.data.params, run.data.tags))
        assert not any(secret in logged for secret in SECRETS), run.info.run_name
    files = [path for path in (root / "artifacts").rglob("*") if path.is_file()]
    files += [root / "server.log", *(path for path in workdir.rglob("*") if path.is_file())]
    assert any(path.name == "model.onnx" for path in files)
    for path in files:
        content = path.read_bytes()
        assert not any(secret.encode() in content for secret in SECRETS), path
    for output in [*outputs, pipeline.stdout + pipeline.stderr]:
        assert not any(secret in output for secret in SECRETS)
