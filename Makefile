# The README's two commands are `make up` and `make test`; both install into .venv when needed.
# Internal targets: gen (regenerate stubs), lint (ruff + buf), install.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BUF := node_modules/.bin/buf

.PHONY: up test gen lint install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/fanbank up

test: $(STAMP)
	$(PY) -m pytest

gen: $(STAMP)
	$(PY) -m shared.codegen

$(BUF): package.json
	npm install --no-audit --no-fund --no-package-lock --loglevel=error
	touch $(BUF)

lint: $(STAMP) $(BUF)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(BUF) lint

clean:
	rm -rf $(VENV) node_modules .data
