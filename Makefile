# The two commands a newcomer needs: `make run` and `make test`.
PYTHON_VERSION := $(shell cat .python-version)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install run run-cluster services browser test test-postgres test-sdk lint bench bench-quick bench-compare clean

$(STAMP): pyproject.toml .python-version
	@command -v pyenv >/dev/null 2>&1 && PYBIN=$$(pyenv root)/versions/$$(pyenv latest -k $(PYTHON_VERSION) 2>/dev/null || echo $(PYTHON_VERSION))/bin/python; \
	[ -x "$$PYBIN" ] || PYBIN=$$(command -v python$(PYTHON_VERSION)); \
	[ -x "$$PYBIN" ] || { echo "Python $(PYTHON_VERSION) not found (pyenv install $(PYTHON_VERSION))"; exit 1; }; \
	[ -x $(PY) ] || $$PYBIN -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import django, channels, pydantic_ai, daphne"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py bootstrap --if-empty --url http://$(HOST):$(PORT)/
	@echo "Console: http://$(HOST):$(PORT)/"
	$(PY) -m console.serve -b $(HOST) -p $(PORT) console.asgi:application

# Two web servers and two Celery workers on PostgreSQL, Redis and RabbitMQ (docs/deploy.md).
run-cluster: install services
	HOST=$(HOST) PORT=$(PORT) scripts/run-cluster.sh

# PostgreSQL, Redis and RabbitMQ on 127.0.0.1, started where they are not answering.
services:
	@scripts/services.sh

# The browser tests drive Debian's chromium (no browser download): install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# The whole suite: on SQLite (the embedded default), then again on PostgreSQL.
test: install browser services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-postgres

# The suite again on PostgreSQL (its own test database), but for the browser, SDK and fuzz tests
# and the live-server tests, which `make test` runs once (their servers use their own databases).
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test
test-postgres: install services
	DATABASE_URL=$(PG_TEST_URL) TEST_DATABASE_NAME=test_suite_$$$$ SECRET_KEY=test-postgres-secret \
	FIELD_ENCRYPTION_KEYS=$$($(PY) -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())") \
	$(PY) -m pytest -q -p no:cacheprovider -m "not sdk and not browser and not live" --ignore=tests/test_openapi_fuzz.py
	@# The request path again with each request's connection closed at its end (DB_CONN_MAX_AGE=0).
	DB_CONN_MAX_AGE=0 DATABASE_URL=$(PG_TEST_URL) TEST_DATABASE_NAME=test_suite_$$$$ SECRET_KEY=test-postgres-secret \
	FIELD_ENCRYPTION_KEYS=$$($(PY) -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())") \
	$(PY) -m pytest -q -p no:cacheprovider tests/test_request_path.py

test-sdk: install
	$(PY) -m pytest -q -m sdk

bench: install
	$(PY) bench/runtime.py

bench-quick: install
	$(PY) bench/runtime.py --quick

# Issue 17: this project beside LangGraph's dev server, the LangChain agent and pydantic-ai alone, in one
# run (LangGraph's own venv in .cache/bench-langgraph, made on first use). ARGS=--quick for a short run.
bench-compare: install
	$(PY) bench/compare.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .cache var/*-test.sqlite3
