# Two commands: `make up` runs interlock (./interlock.toml if present, else embedded defaults), `make test` runs the suite.
# Both build .venv with a Python >= 3.12 found by scripts/find-python.
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint typecheck unit policy-test bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found (see scripts/find-python)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	touch $@

up: $(VENV)/.installed
	$(BIN)/interlock up

lint: $(VENV)/.installed
	$(BIN)/ruff check interlock tests
	$(BIN)/ruff format --check interlock tests

typecheck: $(VENV)/.installed
	$(BIN)/mypy

policy-test: $(VENV)/.installed
	$(BIN)/interlock policy test

unit: $(VENV)/.installed
	scripts/system-deps
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
	npm ci --prefix tests/proxies/mcp/servers --no-audit --no-fund --loglevel=error
	$(BIN)/pytest

test: lint typecheck policy-test unit

bench: $(VENV)/.installed
	$(BIN)/interlock bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
