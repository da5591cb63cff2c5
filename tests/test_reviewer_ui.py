"""The reviewer's path through the MLflow UI, in a real browser.

The smoke pipeline runs twice (so version 1 is the champion version 2 is compared with), a real
`mlflow server` serves the SQLite store, and Debian's Chromium, driven by Selenium through the
system chromedriver, opens the pages a reviewer reads and checks their rendered text. Each page
is saved as a PNG under the module's temp dir (the docs' screenshots are these).

Without chromium and chromedriver on PATH the tests skip with the reason, except under
CI=true (.ci/run installs both), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import LENIENT_GATES, SMOKE, deep_merge, tracking_store_at
from mlflow import MlflowClient
from mlflow.entities import Run
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from servers import mlflow_server

from pdmflow.config import load_config
from pdmflow.steps.pipeline import run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=150)]

MODEL = "pdmflow-smoke-failure"
EXPERIMENT = "pdmflow-smoke"
SEARCH_METRICS = "//input[@placeholder='Search metrics']"
PAGE_TIMEOUT = 90  # seconds: the first page also waits for the UI's bundle on a busy machine


def browser_binaries() -> tuple[str, str]:
    """(chromium, chromedriver) from PATH; skip without them, fail under CI=true."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = " and ".join(
        name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path
    )
    reason = f"{missing} not on PATH (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Store:
    root: Path
    uri: str
    experiment_id: str
    pipelines: list[Run]  # the two `main` runs, oldest first
    card: str  # version 2's model card (its description)
    model_id: str  # the LoggedModel the second pipeline trained (and released as version 2)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[Store]:
    """Two smoke pipelines, both released, in a fresh SQLite store (the browser checked first:
    without one there is nothing to look at)."""
    browser_binaries()
    root = tmp_path_factory.mktemp("reviewer-ui")
    overrides = {
        "tuning": {"n_trials": 2},
        "training": {"refit": False},
        "evaluation": {"robustness": False, "shap_rows": 100},
        "gates": LENIENT_GATES,  # released both times: the pages are under test, not the model
    }
    config_path = root / "tenant.yaml"
    config_path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(SMOKE.read_text()), overrides)))
    with tracking_store_at(root) as uri:
        config = load_config(config_path)
        assert [run_pipeline(config), run_pipeline(config)] == ["1", "2"]
        client = MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        pipelines = client.search_runs(
            [experiment.experiment_id],
            "tags.`pdmflow.step` = 'main'",
            order_by=["attributes.start_time ASC"],
        )
        (released,) = pipelines[-1].outputs.model_outputs
        yield Store(
            root,
            uri,
            experiment.experiment_id,
            pipelines,
            client.get_model_version(MODEL, "2").description,
            released.model_id,
        )


@pytest.fixture(scope="module")
def ui(store) -> Iterator[str]:
    """A real `mlflow server` over the store, as `make ui` would serve it."""
    with mlflow_server(store.uri, store.root / "server") as url:
        yield url


@pytest.fixture(scope="module")
def browser(ui) -> Iterator[WebDriver]:
    """Headless Chromium at 1600x1100, the UI's assistant panel closed, and the UI switched
    to *Model training* once, as a reviewer does (the browser remembers it)."""
    chromium, driver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1600,1100",
    ):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # never Selenium Manager's downloads
        chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        chrome.get(f"{ui}/")
        wait_for(chrome, "Experiments", EXPERIMENT)
        chrome.execute_script(
            "window.localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')"
        )
        chrome.refresh()
        wait_for(chrome, "Model training")
        chrome.find_element(By.XPATH, "//*[normalize-space(text())='Model training']").click()
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def screenshots(store) -> Path:
    folder = store.root / "screenshots"
    folder.mkdir()
    return folder


def page_text(driver: WebDriver) -> str:
    """What the page shows (Selenium's text of <body>: visible text only)."""
    return driver.find_element(By.TAG_NAME, "body").text


def wait_for(driver: WebDriver, *expected: str | re.Pattern[str]) -> str:
    """The page's visible text once it holds every `expected` string or pattern."""

    def missing(text: str) -> list[str]:
        return [
            str(item)
            for item in expected
            if (item.search(text) is None if isinstance(item, re.Pattern) else item not in text)
        ]

    try:
        WebDriverWait(driver, PAGE_TIMEOUT, poll_frequency=0.5).until(
            lambda d: not missing(page_text(d))
        )
    except TimeoutException:
        text = page_text(driver)
        pytest.fail(
            f"{driver.current_url} never showed {missing(text)} in {PAGE_TIMEOUT} s; it shows:\n"
            + text[:3000]
        )
    return page_text(driver)


def number(value: float) -> str:
    """A metric as the UI prints it in full (JavaScript's shortest round-trip form)."""
    return str(int(value)) if value == int(value) else repr(value)


def test_the_experiment_opens_on_its_training_runs(store, ui, browser, screenshots):
    browser.get(f"{ui}/#/experiments/{store.experiment_id}")
    text = wait_for(browser, "Runs", "Run Name", "Dataset", re.compile(r"^main$", re.M))
    assert "/runs" in browser.current_url.split("#", 1)[1]
    # One row per pipeline, its steps folded under it; the parent shows the dataset it read.
    assert len(re.findall(r"^main$", text, re.M)) == 2
    dataset = store.pipelines[-1].inputs.dataset_inputs[0].dataset
    assert f"{dataset.name} ({dataset.digest})" in text
    assert not re.search(r"^(ingest|features|tune|train|evaluate|promote)$", text, re.M)
    browser.save_screenshot(screenshots / "reviewer-runs.png")


def test_the_parent_run_shows_auc_the_decision_and_the_verdict(store, ui, browser, screenshots):
    parent = store.pipelines[-1]
    browser.get(f"{ui}/#/experiments/{store.experiment_id}/runs/{parent.info.run_id}")
    auc = parent.data.metrics["auc"]
    text = wait_for(
        browser,
        f"Released: version 2 of {MODEL} is in Production (@champion).",
        re.compile(rf"^auc\n{re.escape(number(auc))}$", re.M),
        re.compile(r"^pdmflow\.decision\n: released$", re.M),
        "Logged models (1)",
    )
    # The evidence beside the run: the dataset, the one tag of step links, the version.
    dataset = parent.inputs.dataset_inputs[0].dataset
    assert f"{dataset.name} ({dataset.digest})" in text
    steps = json.loads(parent.data.tags["pdmflow.steps"])
    assert re.search(
        r"^pdmflow\.steps\n: " + re.escape(json.dumps(steps, separators=(",", ":"))), text, re.M
    )
    assert not re.search(r"pdmflow\.(step_run|output)\.", text)
    assert re.search(rf"^Registered models\n{MODEL}\nv2$", text, re.M)
    browser.save_screenshot(screenshots / "reviewer-main-run.png")


def test_the_version_page_shows_the_model_card_and_the_alias(store, ui, browser, screenshots):
    browser.get(f"{ui}/#/models/{MODEL}/versions/2")
    headings = [
        line.removeprefix("## ") for line in store.card.splitlines() if line.startswith("## ")
    ]
    assert {"Data", "Gates", "Known limitations"} <= set(headings)
    text = wait_for(
        browser,
        "Version 2",
        re.compile(r"^@ ?champion$", re.M),
        *(re.compile(rf"^{re.escape(heading)}$", re.M) for heading in headings),
    )
    assert re.search(r"^Stage \(deprecated\)\n:\nProduction$", text, re.M)
    browser.save_screenshot(screenshots / "reviewer-model-version.png")


def test_the_logged_model_page_shows_the_test_metrics(store, ui, browser, screenshots):
    browser.get(f"{ui}/#/experiments/{store.experiment_id}/models/{store.model_id}")
    wait_for(browser, "Metrics (", store.model_id[:12])
    search = WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda d: next(
            (e for e in d.find_elements(By.XPATH, SEARCH_METRICS) if e.is_displayed()), None
        )
    )
    search.send_keys("auc")
    auc = store.pipelines[-1].data.metrics["auc"]
    # Evaluate's test AUC, credited to the model beside train's validation AUC.
    wait_for(
        browser,
        re.compile(rf"^auc\n-\nevaluate\n{re.escape(number(auc))}$", re.M),
        re.compile(r"^validation_auc\n-\ntrain\n", re.M),
    )
    browser.save_screenshot(screenshots / "reviewer-logged-model.png")


def test_the_compare_view_lists_both_pipelines_headline_metrics(store, ui, browser, screenshots):
    run_ids = [run.info.run_id for run in store.pipelines]
    query = f"runs={json.dumps(run_ids)}&experiments={json.dumps([store.experiment_id])}"
    browser.get(f"{ui}/#/compare-runs?{query}")
    text = wait_for(
        browser,
        "Comparing 2 Runs from 1 Experiment",
        re.compile(r"^Run ID: " + " ".join(run_ids) + "$", re.M),
        re.compile(r"^Run Name:\nmain\nmain$", re.M),
        re.compile(r"^Metrics$", re.M),
    )
    for name in ("auc", "average_precision", "brier_score"):
        assert re.search(rf"^{name}$", text, re.M), name
    assert re.search(r"^pdmflow\.decision released released$", text, re.M)
    # The picture shows the metrics table, below the plots.
    (heading,) = browser.find_elements(
        By.XPATH, "//*[@role='button'][normalize-space(.)='Metrics']"
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", heading)
    browser.save_screenshot(screenshots / "reviewer-compare.png")
