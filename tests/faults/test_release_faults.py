"""Faults during a release, on a real SQLite store: `promote` SIGKILLed right before each of its
registry calls (the next `status` or `promote` finds the half-done release and repairs it), and
an artifact store that refuses writes. After each the registry invariant holds: at most one
version in Production, none left in Staging, and @champion on the Production version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import LENIENT_GATES, SMOKE, deep_merge, forget_experiment
from mlflow import MlflowClient

from pdmflow import cli as pdmflow_cli
from pdmflow.config import FAULT_KILL_ENV, load_config
from pdmflow.registry import CHAMPION_ALIAS
from pdmflow.registry.faults import KILL_POINTS
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.promote import run_promote
from pdmflow.steps.train import run_train

pytestmark = pytest.mark.cost(seconds=140)
MODEL = "pdmflow-smoke-failure"
# Killed at these, the release already reached Production: a later promote of the same
# evaluation refuses (Production changed), as it should.
PRODUCTION_MOVED = ("set_champion_alias", "set_release_tags")


# Each case kills a promote on its own copy of the database: (the kill point, who repairs).
CASES = {
    **{f"status-{point}": point for point in KILL_POINTS},
    "promote-transition_to_production": "transition_to_production",
    "promote-set_champion_alias": "set_champion_alias",
    "two-production": "transition_to_staging",
}
AT_ONCE = 4  # promotes killed side by side (each imports the whole pipeline: seconds of CPU)


@pytest.fixture(scope="module")
def released_store(tmp_path_factory):
    """A SQLite store with version 1 released and a newer evaluation against it."""
    import yaml

    work = tmp_path_factory.mktemp("release-faults")
    config_path = work / "tenant.yaml"
    config_path.write_text(
        yaml.safe_dump(
            deep_merge(
                yaml.safe_load(SMOKE.read_text()),
                # What promote does is the point here, not the model: the cheapest evaluation.
                {"gates": LENIENT_GATES, "evaluation": {"robustness": False, "shap_rows": 50}},
            )
        )
    )
    uri = f"sqlite:///{work / 'mlflow.db'}"
    previous = os.getcwd()
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        config = load_config(config_path)
        features_uri = run_features(config, run_ingest(config))
        run_evaluate(config, run_train(config, features_uri, "none"))
        assert run_promote(config) == "1"
        run_evaluate(config)  # against version 1: the promote each case kills
    finally:
        mlflow.set_tracking_uri(None)
        forget_experiment()
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.chdir(previous)
    return work, config_path


def copy_of(work: Path, name: str) -> str:
    """A copy of the store's database (the artifacts, addressed by absolute path, are shared;
    new runs write under their own run ids)."""
    shutil.copy(work / "mlflow.db", work / f"{name}.db")
    return f"sqlite:///{work / f'{name}.db'}"


@pytest.fixture(scope="module")
def killed(released_store):
    """Per case: the URI of a database copy on which `promote` was SIGKILLed at its point."""
    work, config_path = released_store
    uris = {case: copy_of(work, case) for case in CASES}
    kill_promotes(CASES, uris, config_path, work)
    return uris


def kill_promotes(cases: dict[str, str], uris: dict[str, str], config_path: Path, work: Path):
    """Per case, a promote SIGKILLed at its point on the case's database, AT_ONCE at a time."""
    forget_experiment()
    items = list(cases.items())
    for start in range(0, len(items), AT_ONCE):
        promotes = {
            case: subprocess.Popen(
                [sys.executable, "-m", "pdmflow.cli", "promote", "--config", str(config_path)],
                env={**os.environ, "MLFLOW_TRACKING_URI": uris[case], FAULT_KILL_ENV: point},
                cwd=work,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for case, point in items[start : start + AT_ONCE]
        }
        for case, promote in promotes.items():
            _, stderr = promote.communicate(timeout=300)
            assert promote.returncode == -9, f"{case}: {stderr[-2000:]}"


@pytest.fixture
def store(released_store, killed, request, monkeypatch):
    """The killed copy of `request.param`'s case, as this process's tracking store."""
    work, config_path = released_store
    uri = killed[request.param] if request.param in killed else copy_of(work, request.param)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri, config_path
    mlflow.set_tracking_uri(None)
    forget_experiment()


def assert_consistent() -> str | None:
    """The invariant; returns the Production version (None when there is none)."""
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    production = [str(v.version) for v in versions if v.current_stage == "Production"]
    assert len(production) <= 1, production
    assert [v.version for v in versions if v.current_stage == "Staging"] == []
    champion = client.get_registered_model(MODEL).aliases.get(CHAMPION_ALIAS)
    assert (None if champion is None else str(champion)) == (production[0] if production else None)
    return production[0] if production else None


@pytest.mark.parametrize(
    ("point", "store"), [(p, f"status-{p}") for p in KILL_POINTS], indirect=["store"]
)
def test_status_repairs_a_promote_killed_at_each_registry_call(point, store, capsys):
    _, config_path = store
    assert pdmflow_cli.run(["status", "--config", str(config_path)]) == 0
    shown = capsys.readouterr().out
    repaired = [line for line in shown.splitlines() if "repaired an interrupted release" in line]
    production = assert_consistent()
    if point == "transition_to_production":  # left in Staging, moved back
        assert repaired == [
            f"model {MODEL}: repaired an interrupted release: moved version 2 from Staging "
            "back to None: its release was interrupted before Production (promote again to "
            "release a new version)"
        ]
        assert production == "1"
    elif point == "set_champion_alias":  # Production moved, @champion still on the old one
        assert repaired == [
            f"model {MODEL}: repaired an interrupted release: moved @champion from 1 to "
            "version 2, the Production version"
        ]
        assert production == "2"
    else:  # nothing half-done: nothing to say
        assert repaired == []
        assert production == ("2" if point == "set_release_tags" else "1")
    assert f"{MODEL}: Production version {production} (@champion -> {production})" in shown
    # Status again: nothing left to repair.
    assert pdmflow_cli.run(["status", "--config", str(config_path)]) == 0
    assert "repaired" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("point", "store"),
    [(p, f"promote-{p}") for p in ("transition_to_production", "set_champion_alias")],
    indirect=["store"],
)
def test_the_next_promote_repairs_first(point, store, capsys):
    _, config_path = store
    status = pdmflow_cli.run(["promote", "--config", str(config_path)])
    shown = capsys.readouterr()
    assert "repaired an interrupted release" in shown.out
    if point in PRODUCTION_MOVED:
        assert status == 2
        assert "Production changed since evaluation" in shown.err.strip().splitlines()[-1]
        assert assert_consistent() == "2"
    else:
        assert status == 0, shown.err[-2000:]
        assert assert_consistent() == "3"  # a fresh version; 2 stays unreleased


@pytest.mark.parametrize("store", ["two-production"], indirect=True)
def test_two_production_versions_are_reduced_to_the_champion(store, capsys):
    _, config_path = store
    client = MlflowClient()  # promote was killed before Staging: version 2 in stage None
    # Another tool moved it to Production without archiving: two Production versions.
    client.transition_model_version_stage(MODEL, "2", "Production")
    assert pdmflow_cli.run(["status", "--config", str(config_path)]) == 0
    assert "archived version 2: it was in Production next to version 1" in capsys.readouterr().out
    assert assert_consistent() == "1"


def read_only(directory) -> list[str]:
    """A command prefix that runs a command with `directory` read-only (for it alone)."""
    if os.geteuid() != 0:  # permissions stop anyone but root
        directory.chmod(0o555)
        for path in directory.rglob("*"):
            path.chmod(0o555 if path.is_dir() else 0o444)
        return []
    # root writes through permissions: a read-only bind mount in a private mount namespace.
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(directory)]


@pytest.mark.parametrize("store", ["read-only"], indirect=True)
def test_promote_on_a_read_only_artifact_store_fails_in_one_line_registry_unchanged(store):
    uri, config_path = store
    artifacts = Path.cwd() / "mlruns"
    forget_experiment()
    promote = subprocess.run(
        [*read_only(artifacts), sys.executable, "-m", "pdmflow.cli", "promote"]
        + ["--config", str(config_path)],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert promote.returncode == 6, promote.stderr[-3000:]
    assert "Traceback" not in promote.stderr
    last = promote.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pdmflow promote: error: cannot write {artifacts}/"), last
    assert "read-only file system" in last or "permission denied" in last
    versions = MlflowClient().search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert assert_consistent() == "1"


# registry.mode: aliases. The same store migrated (`pdmflow registry migrate --to aliases`):
# version 1 becomes @production, and the pending evaluation against it promotes as before.
ALIAS_POINTS = ("transition_to_staging", "transition_to_production", "set_champion_alias",
                "set_release_tags")  # fmt: skip
ALIAS_CASES = {
    **{f"status-{point}": point for point in ALIAS_POINTS},
    "promote-transition_to_production": "transition_to_production",
    "promote-set_champion_alias": "set_champion_alias",
}


@pytest.fixture(scope="module")
def migrated(released_store):
    """(work dir, aliases-mode config, the migrated database's URI, what migrate printed)."""
    import yaml

    work, config_path = released_store
    aliases_config = work / "tenant-aliases.yaml"
    aliases_config.write_text(
        yaml.safe_dump(
            deep_merge(yaml.safe_load(config_path.read_text()), {"registry": {"mode": "aliases"}})
        )
    )
    uri = copy_of(work, "aliases-base")
    forget_experiment()
    runs = []
    for _ in range(2):  # the second run finds nothing to change
        runs.append(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pdmflow.cli",
                    "registry",
                    "migrate",
                    "--to",
                    "aliases",
                    "--config",
                    str(aliases_config),
                ],
                env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                cwd=work,
                capture_output=True,
                text=True,
                timeout=300,
            )  # fmt: skip
        )
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    return work, aliases_config, uri, [run.stdout for run in runs]


@pytest.fixture(scope="module")
def killed_aliases(migrated):
    """Per alias case: a copy of the migrated database on which promote was SIGKILLed."""
    work, config_path, _, _ = migrated
    uris = {}
    for case in ALIAS_CASES:
        shutil.copy(work / "aliases-base.db", work / f"aliases-{case}.db")
        uris[case] = f"sqlite:///{work / f'aliases-{case}.db'}"
    kill_promotes(ALIAS_CASES, uris, config_path, work)
    return uris


@pytest.fixture
def alias_store(migrated, killed_aliases, request, monkeypatch):
    """The killed copy of alias case `request.param` (or the migrated store itself)."""
    work, config_path, base, _ = migrated
    uri = killed_aliases.get(request.param, base)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri, config_path
    mlflow.set_tracking_uri(None)
    forget_experiment()


def assert_consistent_aliases() -> str | None:
    """The invariant in aliases mode; returns the @production version (None: none)."""
    from pdmflow.registry.versions import ARCHIVED_TAG

    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert {v.current_stage for v in versions} == {"None"}  # no stage, ever
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    assert "staging" not in aliases
    production = aliases.get("production")
    assert aliases.get(CHAMPION_ALIAS) == production
    if production is not None:
        assert ARCHIVED_TAG not in client.get_model_version(MODEL, production).tags
    return production


@pytest.mark.parametrize("alias_store", ["migrated"], indirect=True)
def test_migrate_sets_aliases_from_stages_once_and_refuses_stage_releases_after(
    alias_store, migrated, capsys
):
    from pdmflow.registry.versions import ARCHIVED_TAG, MODE_TAG

    _, _, _, printed = migrated
    assert f"model {MODEL}: @production -> version 1 (its Production version)" in printed[0]
    assert f"model {MODEL}: version 1: stage Production cleared" in printed[0]
    assert "released by aliases already: nothing to change" in printed[1]
    assert assert_consistent_aliases() == "1"
    client = MlflowClient()
    assert client.get_registered_model(MODEL).tags[MODE_TAG] == "aliases"
    assert client.get_model_version(MODEL, "1").tags["pdmflow.former_stage"] == "Production"
    assert ARCHIVED_TAG not in client.get_model_version(MODEL, "1").tags
    # Each run is on record in the tenant's experiment.
    experiment = client.get_experiment_by_name(load_config(migrated[1]).experiment_name)
    runs = client.search_runs([experiment.experiment_id], "tags.`pdmflow.step` = 'registry'")
    assert sorted(r.data.metrics["registry_changes"] for r in runs) == [0, 3]
    # A promote still configured for stages is refused in one line, nothing registered.
    stages_config = migrated[0] / "tenant.yaml"
    assert pdmflow_cli.run(["promote", "--config", str(stages_config)]) == 2
    assert capsys.readouterr().err == (
        f"pdmflow promote: error: registry.mode is stages but model {MODEL} is released by "
        f"aliases (tag {MODE_TAG}); set registry.mode: aliases in the tenant config\n"
    )
    assert [str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")] == ["1"]


@pytest.mark.parametrize(
    ("point", "alias_store"), [(p, f"status-{p}") for p in ALIAS_POINTS], indirect=["alias_store"]
)
def test_status_repairs_an_alias_release_killed_at_each_call(point, alias_store, capsys):
    _, config_path = alias_store
    assert pdmflow_cli.run(["status", "--config", str(config_path)]) == 0
    shown = capsys.readouterr().out
    prefix = f"model {MODEL}: repaired an interrupted release: "
    repaired = [line.removeprefix(prefix) for line in shown.splitlines() if prefix in line]
    production = assert_consistent_aliases()
    if point == "transition_to_production":  # @staging set, @production not moved
        assert repaired == [
            "moved version 2 from @staging: its release was interrupted before Production "
            "(promote again to release a new version)"
        ]
        assert production == "1"
    elif point == "set_champion_alias":  # @production moved, @champion and @staging behind
        assert repaired == [
            "removed @staging from version 2: its release had reached @production",
            "moved @champion from 1 to version 2, the Production version",
        ]
        assert production == "2"
    else:  # nothing half-done
        assert repaired == []
        assert production == ("2" if point == "set_release_tags" else "1")
    assert f"{MODEL}: @production version {production} (@champion -> {production})" in shown
    assert pdmflow_cli.run(["status", "--config", str(config_path)]) == 0
    assert "repaired" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("point", "alias_store"),
    [(p, f"promote-{p}") for p in ("transition_to_production", "set_champion_alias")],
    indirect=["alias_store"],
)
def test_the_next_alias_promote_repairs_first(point, alias_store, capsys):
    _, config_path = alias_store
    status = pdmflow_cli.run(["promote", "--config", str(config_path)])
    shown = capsys.readouterr()
    assert "repaired an interrupted release" in shown.out
    if point in PRODUCTION_MOVED:
        assert status == 2
        assert "Production changed since evaluation" in shown.err.strip().splitlines()[-1]
        assert assert_consistent_aliases() == "2"
    else:
        assert status == 0, shown.err[-2000:]
        assert assert_consistent_aliases() == "3"
        assert "released to @production, @champion" in shown.out
