# Two commands on a fresh machine (only Python 3.11 and make needed):
#   make run    set up .venv, run the whole pipeline on the embedded SQLite store, print the result
#   make test   set up .venv, run the test suite
# The manual: make docs (serve it on :8000), make docs-build (strict build, as CI runs it).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
# make run TRIALS=5 (TIMEOUT=120): the Optuna budget of this run; 0 takes tuning.* from CONFIG.
TRIALS ?= 0
TIMEOUT ?= 0
EXPERIMENT = $(shell sed -n 's/^experiment_name: *//p' $(CONFIG))
# Four workers on this 2-core machine (many tests wait on servers and subprocesses: more
# workers than cores was faster, measured back to back), each test file on one of them (a
# file's module fixtures are built once), taking the files in the order tests/conftest.py gives
# them (costliest first), not xdist's own.
PYTEST_ARGS ?= -n 4 --dist loadfile --no-loadscope-reorder

.PHONY: run test ui server lint bench quality docs docs-build clean airflow-env

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" mlflow run . -e main --env-manager local \
		--experiment-name $(EXPERIMENT) -P config=$(CONFIG) -P n_trials=$(TRIALS) \
		-P timeout=$(TIMEOUT)
	$(BIN)/python -m pdmflow.cli status --config $(CONFIG)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Apache Airflow for orchestration/airflow/pdmflow_dag.py, in its own environment (Airflow pins
# its own dependency set): apache-airflow pinned, with our constraints file standing in for
# Airflow's. tests/test_airflow_dag.py runs the DAG with it; CI builds it before make test.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_REQUIREMENTS := orchestration/airflow/requirements.txt
AIRFLOW_CONSTRAINTS := orchestration/airflow/constraints.txt

$(AIRFLOW_VENV)/bin/.installed: $(AIRFLOW_REQUIREMENTS) $(AIRFLOW_CONSTRAINTS)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r $(AIRFLOW_REQUIREMENTS) \
		--constraint $(AIRFLOW_CONSTRAINTS)
	touch $@

airflow-env: $(AIRFLOW_VENV)/bin/.installed

ui: $(BIN)/.installed
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

# The tracking server that lets no one in, natively (compose `mlflow` runs the same launcher).
# Secrets only from the environment (configs/server/serve.py lists them), e.g.
#   MLFLOW_AUTH_ADMIN_PASSWORD=... MLFLOW_FLASK_SERVER_SECRET_KEY=... PGPASSWORD=... make server
# PostgreSQL: PGHOST, PGUSER and PGDATABASE (the auth database) default to 127.0.0.1, postgres
# and mlflow_auth; the backend database must exist (createdb mlflow).
BACKEND_STORE_URI ?= postgresql+psycopg2://postgres@127.0.0.1:5432/mlflow

server: $(BIN)/.installed
	PGHOST="$${PGHOST:-127.0.0.1}" PGUSER="$${PGUSER:-postgres}" \
	PGDATABASE="$${PGDATABASE:-mlflow_auth}" $(BIN)/python configs/server/serve.py \
		--backend-store-uri $(BACKEND_STORE_URI) \
		--artifacts-destination ./mlartifacts --serve-artifacts --host 127.0.0.1 --port 5000

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench orchestration scheduler.py
	$(BIN)/ruff format --check src tests bench orchestration scheduler.py

bench: $(BIN)/.installed
	$(BIN)/python bench/pipeline.py --config $(CONFIG)

quality: $(BIN)/.installed
	$(BIN)/python bench/quality.py

# The docs site (mkdocs.yml); docs/gen_reference.py generates the config and CLI references.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# Strict: a broken link or anchor, a missing page or snippet fails. Built into a temp dir.
docs-build: $(BIN)/.installed
	site="$$(mktemp -d)/site" && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict \
		--site-dir "$$site" && echo "docs built into $$site"

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) mlflow.db mlruns mlartifacts .pdmflow site
