# poolcast: two commands for a new user (see README.md).
#   make run    set everything up, then run the monthly retrain on the bundled example data
#   make test   set everything up, then run the test suite
SHELL := /bin/bash
.DEFAULT_GOAL := run

# Python 3.12 (PyMC 6 and PyTensor 3 need it): first a python3.12 that runs, then pyenv's 3.12.
PY312 ?= $(shell for p in "$$(command -v python3.12)" $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V -r) /usr/bin/python3.12 /usr/local/bin/python3.12; do \
            [ -n "$$p" ] && "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
UV_VERSION := 0.13.9
UV := .tools/bin/uv
EXAMPLE := data/example/online_retail_sku_monthly.csv.gz

export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MPLBACKEND ?= Agg

.PHONY: setup run test lint format benchmark clean

$(UV):
	@if [ -z "$(PY312)" ]; then echo "error: Python 3.12 not found (looked for python3.12 on PATH and in pyenv); install it, or pass PY312=/path/to/python3.12" >&2; exit 1; fi
	$(PY312) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python "$(PY312)"
	@touch $@

setup: .venv/.synced

run: setup
	.venv/bin/poolcast run --source $(EXAMPLE) --mapping online_retail --as-of 2011-11

test: setup
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

benchmark: setup
	.venv/bin/python benchmarks/glmm_benchmark.py

clean:
	rm -rf .venv .tools .poolcast
