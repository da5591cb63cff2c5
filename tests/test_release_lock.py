"""One release at a time: the release lock on each kind of store, and two promotes racing
through a real PostgreSQL-backed `mlflow server`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
from conftest import LENIENT_GATES
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from servers import mlflow_server, new_database

from pdmflow.config import load_config
from pdmflow.errors import StepInputError
from pdmflow.registry import CHAMPION_ALIAS, release_lock
from pdmflow.registry.lock import (
    EXPIRES_TAG,
    HOLDER_TAG,
    LOCK_SUFFIX,
    TOKEN_TAG,
    holder_description,
    lock_file_path,
    registry_entity_lock,
)
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=90)]

MODEL = "pdmflow-smoke-failure"
HELD = f"^model {MODEL}: another release holds the release lock \\((.+)\\); gave up after 0.5 s"
# Cheap candidates: a few shallow trees, one thread, gates that any sane model passes (the
# race is under test here, not the model).
CHEAP = {
    "training": {
        "params": {"n_estimators": 40, "num_leaves": 7, "n_jobs": 1},
        "refit": False,
    },
    "evaluation": {"robustness": False, "shap_rows": 100},
    "gates": LENIENT_GATES,
}


def test_file_lock_on_sqlite_excludes_a_second_holder_and_dies_with_its_holder(tracking_store):
    path = lock_file_path(tracking_store, MODEL)
    assert path.parent == Path(tracking_store.removeprefix("sqlite:///")).parent
    with release_lock(MODEL):
        assert path.read_text().strip() == holder_description()
        # Another thread opens its own descriptor: flock excludes it like another process.
        failures: list[Exception] = []

        def second() -> None:
            try:
                with release_lock(MODEL, wait_seconds=0.5):
                    pass
            except StepInputError as error:
                failures.append(error)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        (failure,) = failures
        assert str(failure).startswith(
            f"model {MODEL}: another release holds the release lock ({holder_description()})"
        )
    with release_lock(MODEL, wait_seconds=0.5):
        pass

    # A holder that dies (SIGKILL: no clean-up of its own) loses the lock with its process.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, b'promote on another host pid 4242')\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StepInputError, match=HELD) as error:
            with release_lock(MODEL, wait_seconds=0.5):
                pass
        assert "(promote on another host pid 4242)" in str(error.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    started = time.monotonic()
    with release_lock(MODEL, wait_seconds=10):
        assert time.monotonic() - started < 2


def test_registry_lock_excludes_breaks_an_expired_one_and_serialises(tracking_store, caplog):
    client = MlflowClient()
    lock_name = MODEL + LOCK_SUFFIX

    def lock_exists() -> bool:
        try:
            client.get_registered_model(lock_name)
        except MlflowException:
            return False
        return True

    with registry_entity_lock(MODEL, wait_seconds=5):
        tags = client.get_registered_model(lock_name).tags
        assert tags[HOLDER_TAG] == holder_description()
        assert datetime.fromisoformat(tags[EXPIRES_TAG]) > datetime.now(UTC)
        with pytest.raises(StepInputError, match=HELD) as error:
            with registry_entity_lock(MODEL, wait_seconds=0.5):
                pass
        assert f"({holder_description()}, expires " in str(error.value)
        assert "\n" not in str(error.value)
    assert not lock_exists()

    # A holder that died: its lock stays in the registry until its expiry has passed.
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    client.create_registered_model(
        lock_name, tags={HOLDER_TAG: "ci@gone pid 7", TOKEN_TAG: "dead", EXPIRES_TAG: past}
    )
    with caplog.at_level(logging.WARNING, logger="pdmflow.registry.lock"):
        with registry_entity_lock(MODEL, wait_seconds=5):
            assert client.get_registered_model(lock_name).tags[TOKEN_TAG] != "dead"
    assert f"release lock of model {MODEL}: breaking the expired lock of ci@gone pid 7" in (
        caplog.text
    )
    assert not lock_exists()
    assert not client.search_registered_models(f"name LIKE '{lock_name}%'")

    # Three releases at once: one at a time inside, every one gets its turn.
    inside, most_inside, entered = 0, 0, []
    guard = threading.Lock()

    def release(index: int) -> None:
        nonlocal inside, most_inside
        with registry_entity_lock(MODEL, wait_seconds=60):
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            time.sleep(0.2)  # read-check-write of a release
            entered.append(index)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=release, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert sorted(entered) == [0, 1, 2]
    assert most_inside == 1


def test_postgres_advisory_lock_names_its_holder(monkeypatch):
    with new_database("pdmflow_lock") as url:
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", url)
        assert mlflow.get_registry_uri() == url
        with release_lock(MODEL):
            with pytest.raises(StepInputError, match=HELD) as error:
                with release_lock(MODEL, wait_seconds=0.5):
                    pass
            assert f"(pdmflow {holder_description()} (database backend pid " in str(error.value)
        with release_lock(MODEL, wait_seconds=0.5):
            pass


def _wait_for(condition, what: str, processes: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if any(p.poll() is not None for p in processes):
            raise AssertionError(f"a promote exited before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _race(tmp_path: Path, url: str, paths: list[Path], evaluations: list[str], model: str):
    """Two promotes of `model`, one per evaluation, let go at once; (exit codes, outputs)."""
    logs = [tmp_path / f"{model}-promote{i}.log" for i in (1, 2)]
    # The test holds the lock until both promotes wait for it: then they race for real.
    with release_lock(model):
        promotes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pdmflow.cli",
                    "promote",
                    "--config",
                    str(path),
                    "--evaluate-run-id",
                    evaluation,
                ],
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                env={**os.environ, "MLFLOW_TRACKING_URI": url},
                cwd=tmp_path,
            )  # fmt: skip
            for path, evaluation, log in zip(paths, evaluations, logs, strict=True)
        ]
        _wait_for(
            lambda: all(
                f"release lock of model {model} is held by" in log.read_text() for log in logs
            ),
            "both promotes to wait for the release lock",
            promotes,
            timeout=120,
        )
    codes = [p.wait(120) for p in promotes]
    return codes, [log.read_text() for log in logs]


def test_two_promotes_at_once_release_exactly_one(tmp_path, write_config, monkeypatch):
    """In each registry mode (a model of its own on one server, from the same two
    evaluations): one promote releases, the other stops in one line, nothing else is left."""
    models = {"stages": MODEL, "aliases": f"{MODEL}-aliases"}
    with (
        new_database("pdmflow_race") as database,
        mlflow_server(database, tmp_path / "server") as url,
    ):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
        monkeypatch.chdir(tmp_path)
        mlflow.set_tracking_uri(url)
        try:
            configs: dict[str, list[Path]] = {mode: [] for mode in models}
            evaluations = []
            for seed in (1, 2):
                for mode, model in models.items():
                    configs[mode].append(
                        write_config(
                            {
                                **CHEAP,
                                "training": {**CHEAP["training"], "seed": seed},
                                "registry": {"mode": mode},
                                "registered_model_name": model,
                            },
                            f"{mode}-seed{seed}.yaml",
                        )
                    )
                config = load_config(configs["stages"][-1])
                if seed == 1:
                    features_uri = run_features(config, run_ingest(config))
                evaluations.append(run_evaluate(config, run_train(config, features_uri, "none")))
            races = {
                mode: _race(tmp_path, url, configs[mode], evaluations, model)
                for mode, model in models.items()
            }
        finally:
            mlflow.set_tracking_uri(None)
        client = MlflowClient(url)
        for mode, model in models.items():
            codes, outputs = races[mode]
            assert sorted(codes) == [0, 2], outputs
            winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
            (error,) = [line for line in outputs[loser].splitlines() if line.startswith("pdmflow ")]
            assert error.startswith(
                f"pdmflow promote: error: model {model}: Production changed since evaluation: "
                "run evaluate again"
            )
            assert "evaluated against version none, Production is now 1" in error
            (version,) = client.search_model_versions(f"name = '{model}'")
            if mode == "aliases":
                assert version.current_stage == "None"
                assert client.get_model_version_by_alias(model, "production").version == "1"
            else:
                assert version.current_stage == "Production"
            assert version.tags["evaluate_run_id"] == evaluations[winner]
            assert client.get_model_version_by_alias(model, CHAMPION_ALIAS).version == "1"
        # The locks (registered models named <model>.release-lock) are gone.
        assert sorted(m.name for m in client.search_registered_models()) == sorted(models.values())
