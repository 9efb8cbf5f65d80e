# The two commands a newcomer needs: `make run` and `make test`.
PYTHON_VERSION := $(shell cat .python-version)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install run browser test test-sdk lint bench bench-quick clean

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
	$(PY) -m daphne -b $(HOST) -p $(PORT) console.asgi:application

# The browser tests drive Debian's chromium (no browser download): install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

test: install browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

test-sdk: install
	$(PY) -m pytest -q -m sdk

bench: install
	$(PY) bench/runtime.py

bench-quick: install
	$(PY) bench/runtime.py --quick

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .cache var/*-test.sqlite3
