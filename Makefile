# Two commands on a fresh machine (only Python 3.11 and make needed):
#   make run    set up .venv, run the whole pipeline on the embedded SQLite store, print the result
#   make test   set up .venv, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
EXPERIMENT = $(shell sed -n 's/^experiment_name: *//p' $(CONFIG))
PYTEST_ARGS ?=

.PHONY: run test ui lint bench quality clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" mlflow run . -e main --env-manager local \
		--experiment-name $(EXPERIMENT) -P config=$(CONFIG)
	$(BIN)/python -m pdmflow.cli status --config $(CONFIG)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: $(BIN)/.installed
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench scheduler.py

bench: $(BIN)/.installed
	$(BIN)/python bench/pipeline.py --config $(CONFIG)

quality: $(BIN)/.installed
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) mlflow.db mlruns mlartifacts .pdmflow
