# Two commands on a fresh machine with Python 3.11+:  `make demo`  and  `make test`.
# Each creates .venv and installs the project (editable) when missing or stale: `demo` only what the demo
# runs (the `all` extra), `test`, `lint`, `docs` and `bench` the development tools too (the `dev` extra).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: demo test docs-test lint docs bench install clean rebuild-venv

# `PYTHON=python3.12 make demo` after a `make demo` with another interpreter: .venv is made anew with the
# one asked for (before, the old .venv was silently kept). The interpreter a venv runs is its own record
# (its pyvenv.cfg, read back through it), so venvs made before this rule are checked too; a broken one
# (its interpreter gone) counts as different. Only a PYTHON given on the command line or in the
# environment does this: a later plain `make test` keeps the .venv that PYTHON made.
IDENTIFY := -c 'import sys; print("Python %d.%d (%s)" % (*sys.version_info[:2], sys.base_prefix))'
ifneq ($(origin PYTHON),file)
ifneq ($(wildcard $(VENV)/pyvenv.cfg),)
VENV_PYTHON := $(shell $(BIN)/python $(IDENTIFY) 2>/dev/null)
WANTED_PYTHON := $(shell $(PYTHON) $(IDENTIFY) 2>/dev/null)
ifneq ($(VENV_PYTHON),$(WANTED_PYTHON))
REBUILD := rebuild-venv
endif
endif
endif

# Phony, so every target below it is made again in this run, in order, once .venv is gone.
rebuild-venv:
	@if [ -z '$(WANTED_PYTHON)' ]; then \
		echo "error: PYTHON=$(PYTHON) is not a Python interpreter that runs; .venv is kept (it runs $(or $(VENV_PYTHON),an interpreter that no longer runs)). Give PYTHON a working interpreter, or run make clean" >&2; \
		exit 2; \
	fi
	@echo "PYTHON=$(PYTHON) is $(WANTED_PYTHON) but .venv runs $(or $(VENV_PYTHON),an interpreter that no longer runs): making .venv anew"
	rm -rf $(VENV)

$(BIN)/python: $(REBUILD)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUNTIME): pyproject.toml $(REBUILD) | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(RUNTIME)

# dev includes all, so it satisfies the demo's stamp too.
$(DEV): pyproject.toml $(REBUILD) | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(DEV) $(RUNTIME)

install: $(DEV)

demo: $(RUNTIME)
	$(BIN)/rpq demo

# The suite but the doc blocks, which `docs-test` runs: a page at a time (they share port 8000), so
# in one process, with nothing to gain from xdist.
test: $(DEV)
	$(BIN)/python -m pytest -q -m "not docs_blocks"

docs-test: $(DEV)
	$(BIN)/python -m pytest -q -n 0 -m docs_blocks tests/test_docs_blocks.py

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
