# postrelay — two commands on a fresh machine with only Python 3.11+:
#   make run    installs into .venv and starts receiver + worker on an embedded Redis (examples/dev.toml)
#   make test   installs test dependencies into .venv and runs ruff + every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/dev.toml

.PHONY: install run demo screenshots test lint bench bench-smoke validate-deploy clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,embedded]'

run: install
	$(BIN)/postrelay run --config $(CONFIG)

# a living console in a minute: demo data in the embedded Redis, then receiver + worker (http://127.0.0.1:8000/ui/)
demo: install
	$(BIN)/postrelay demo --config examples/demo.toml
	$(BIN)/postrelay run --config examples/demo.toml

lint: install
	$(BIN)/ruff check .

# docs/console/*.png: every console page in headless Chromium, from the demo data (tests/console/test_screenshots.py)
screenshots: install
	POSTRELAY_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/console/test_screenshots.py

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench

bench-smoke: install
	$(BIN)/python -m bench --smoke

validate-deploy:
	bash .ci/validate-deploy

clean:
	rm -rf $(VENV) .postrelay .pytest_cache .ruff_cache bench/out
