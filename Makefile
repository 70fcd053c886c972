# Two commands on a fresh machine with Python 3.11+:  `make demo`  and  `make test`.
# Each creates .venv and installs the project (editable) when missing or stale: `demo` only what the demo
# runs (the `all` extra), `test`, `lint` and `bench` the development tools too (the `dev` extra).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(RUNTIME)

# dev includes all, so it satisfies the demo's stamp too.
$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(DEV) $(RUNTIME)

install: $(DEV)

demo: $(RUNTIME)
	$(BIN)/rpq demo

test: $(DEV)
	$(BIN)/python -m pytest -q

lint: $(DEV)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

bench: $(DEV)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
