# Two commands on a fresh machine with Python 3.11+:  `make demo`  and  `make test`.
# Each creates .venv and installs the project (editable) when missing or stale: `demo` only what the demo
# runs (the `all` extra), `test`, `lint`, `docs` and `bench` the development tools too (the `dev` extra).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint docs bench install clean

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

# The API reference from the docstrings plus the guides, into site/; any warning fails the build.
# NO_MKDOCS_2_WARNING silences Material's end-of-life banner, which is not about this site.
docs: $(DEV)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(DEV)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
