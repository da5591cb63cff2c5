"""The project's own files agree: entry points, environments, compose, CI and README."""

import json
import re
import tomllib

import yaml
from conftest import REPO
from mlflow.projects._project_spec import load_project

from pdmflow.config import DASK_ADDRESS_ENV, STORAGE_URI_ENV, EngineConfig, load_config

STEPS = {
    "ingest", "features", "tune", "train", "evaluate", "promote", "main", "rollback", "monitor",
    "reproduce", "score",
}  # fmt: skip


def test_mlproject_has_every_entry_point_with_a_config_parameter():
    project = load_project(str(REPO))
    assert set(project._entry_points) == STEPS
    for name, entry_point in project._entry_points.items():
        if name == "reproduce":  # the recorded config of the version
            assert set(entry_point.parameters) == {"model", "version"}
            continue
        assert entry_point.parameters["config"].default == "configs/default.yaml", name
        assert f"pdmflow.cli {name} " in entry_point.command


def test_docker_and_kubernetes_run_the_same_entry_points():
    docker = load_project(str(REPO / "mlflow_projects" / "docker"))
    root = load_project(str(REPO))
    assert set(docker._entry_points) == STEPS
    assert docker.docker_env["image"] == "pdmflow:latest"
    for name in STEPS:
        assert (
            docker._entry_points[name].command.replace("/app/src", "src")
            == root._entry_points[name].command
        )
    kube = json.loads((REPO / "mlflow_projects/kubernetes/kubernetes_config.json").read_text())
    template = yaml.safe_load((REPO / kube["kube-job-template-path"]).read_text())
    assert template["kind"] == "Job"
    container = template["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["{replaced with MLflow Project entry point command}"]


def test_conda_env_lists_the_same_dependencies_as_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(pip_section) == sorted(pyproject["project"]["dependencies"])
    assert "python=3.11" in conda["dependencies"]
    # No needless cap: Python 3.12 and 3.13 users must be able to install.
    assert pyproject["project"]["requires-python"] == ">=3.11"


def test_compose_stack_has_postgres_mlflow_scheduler_serve_and_a_dask_cluster():
    compose = yaml.safe_load((REPO / "docker-compose.dev.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "postgres", "mlflow", "accounts", "scheduler", "serve",
        "dask-scheduler", "dask-worker-1", "dask-worker-2",
    }  # fmt: skip
    # The REST service is the CLI the native test starts (test_batch_scoring), on the tenant.
    serve = services["serve"]["command"]
    assert serve[:4] == ["python", "-m", "pdmflow.cli", "serve"] and "--config" in serve
    account = load_config(REPO / serve[serve.index("--config") + 1]).tracking
    assert account.password_env in services["serve"]["environment"]
    assert "postgresql+psycopg2://" in services["mlflow"]["command"]
    assert "--serve-artifacts" in services["mlflow"]["command"]
    assert "configs/server/serve.py" in services["mlflow"]["command"]  # basic auth
    assert services["scheduler"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # Each tenant the scheduler runs logs in with its own account, password from the host.
    command = services["scheduler"]["command"]
    configs = [command[i + 1] for i, arg in enumerate(command) if arg == "--config"]
    for path in configs:
        account = load_config(REPO / path).tracking
        assert account.username, path
        assert account.password_env in services["scheduler"]["environment"], path
        assert account.password_env in services["accounts"]["environment"], path
        assert path in services["accounts"]["command"], path


def test_compose_dask_cluster_is_a_scheduler_and_two_workers_of_the_projects_image():
    compose = yaml.safe_load((REPO / "docker-compose.dev.yml").read_text())
    services = compose["services"]
    image = services["mlflow"]["image"]  # the one the stack builds from the Dockerfile
    scheduler = services["dask-scheduler"]
    assert scheduler["image"] == image
    assert scheduler["command"][:2] == ["dask", "scheduler"]
    port = scheduler["command"][scheduler["command"].index("--port") + 1]
    address = f"tcp://dask-scheduler:{port}"
    # The address the stack's tenants use is one the engine block accepts.
    assert EngineConfig(kind="dask", address=address).address == address
    for name in ("dask-worker-1", "dask-worker-2"):
        worker = services[name]
        # The same image: workers unpickle pdmflow functions, so they need the same pdmflow.
        assert worker["image"] == image, name
        assert worker["command"][:3] == ["dask", "worker", address], name
        assert "dask-scheduler" in worker["depends_on"], name
    # The pipeline's scheduler hands the address to tenants on engine kind dask.
    assert services["scheduler"]["environment"][DASK_ADDRESS_ENV] == address
    # ... and the storage the data steps share with the workers (features tasks read and
    # write parts there): one volume, mounted where PDMFLOW_STORAGE_URI points, in all three.
    storage = services["scheduler"]["environment"][STORAGE_URI_ENV]
    for name in ("scheduler", "dask-worker-1", "dask-worker-2"):
        mounts = dict(volume.split(":", 1) for volume in services[name]["volumes"])
        assert mounts.get("pdmflow-storage") == storage, name
    assert "pdmflow-storage" in compose["volumes"]
    assert "dask-scheduler" in services["scheduler"]["depends_on"]
    # The image installs pdmflow with its dependencies: the dask CLI and bokeh's dashboard.
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("dask[") and "diagnostics" in d for d in dependencies)
    assert "pip install --no-cache-dir ." in (REPO / "Dockerfile").read_text()


def test_ci_runs_the_readme_test_command_then_builds_the_docs():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^make (\w+)$", readme, flags=re.M)
    assert commands[:2] == ["run", "test"]
    makefile = (REPO / "Makefile").read_text()
    for target in ("run", "test", "docs", "docs-build"):
        assert re.search(rf"^{target}: \$\(BIN\)/\.installed$", makefile, flags=re.M), target
    ci = (REPO / ".ci/run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)
    assert ci.index("make test") < ci.index("make docs-build")
    # The Airflow DAG test (tests/test_airflow_dag.py) needs Airflow's own environment first.
    assert re.search(r"^make airflow-env$", ci, flags=re.M)
    assert ci.index("make airflow-env") < ci.index("make test")
    assert re.search(r"^airflow-env: \$\(AIRFLOW_VENV\)/bin/\.installed$", makefile, flags=re.M)


def test_readme_is_a_front_page_whose_links_reach_docs_pages():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "the README links into the docs"
    for link in local:
        assert (REPO / link).is_file(), link
    nav = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)["nav"]
    pages = set(re.findall(r"'([\w/.-]+\.md)'", str(nav)))
    # Each of the four users gets one guide, and each guide is a page of the site.
    for guide in ("data-scientist/index.md", "reviewer.md", "serving.md", "operator.md"):
        assert f"docs/{guide}" in local, guide
        assert guide in pages, guide
