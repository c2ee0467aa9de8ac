# postrelay — two commands on a fresh machine with only Python 3.11+:
#   make run    installs into .venv and starts receiver + worker on an embedded Redis (examples/dev.toml)
#   make test   installs test dependencies into .venv and runs ruff, mypy and every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/dev.toml

.PHONY: install run test lint typecheck bench bench-smoke validate-deploy clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,embedded]'

run: install
	$(BIN)/postrelay run --config $(CONFIG)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench

bench-smoke: install
	$(BIN)/python -m bench --smoke

validate-deploy:
	bash .ci/validate-deploy

clean:
	rm -rf $(VENV) .postrelay .pytest_cache .ruff_cache .mypy_cache bench/out
