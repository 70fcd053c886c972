"""`make demo` installs what the demo runs; `make test` and `make lint` (CI) the dev tools; `PYTHON=...`
makes .venv anew with another interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _plan(target: str, tmp_path: Path) -> str:
    """What `make TARGET` would run in a fresh clone (dry run: nothing is installed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    done = subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True)
    return done.stdout


def test_demo_installs_the_runtime_not_the_dev_tools(tmp_path: Path) -> None:
    plan = _plan("demo", tmp_path)
    assert '-e ".[all]"' in plan
    assert "[dev]" not in plan  # before: pytest, mypy, ruff, fastapi, flask, ... for a demo


@pytest.mark.parametrize("target", ["test", "lint"])
def test_test_and_lint_install_the_dev_tools(target: str, tmp_path: Path) -> None:
    assert '-e ".[dev]"' in _plan(target, tmp_path)


def _venv(tmp_path: Path, python_script: str) -> None:
    """A .venv whose python is `python_script` (a shell script), with the demo's dependencies installed."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text(f"#!/bin/sh\n{python_script}\n")
    python.chmod(0o755)
    (tmp_path / ".venv" / "pyvenv.cfg").write_text("home = /elsewhere\n")
    (tmp_path / ".venv" / ".installed-runtime").touch()  # after pyproject.toml: up to date


def _make(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", *args], cwd=tmp_path, capture_output=True, text=True, env={**environ, **(env or {})}
    )


OTHER_PYTHON = 'echo "Python 3.10 (/opt/other)"'  # what the venv's interpreter says it is
SAME_PYTHON = f'exec "{sys.executable}" "$@"'


@pytest.mark.parametrize("how", ["command line", "environment"])
def test_another_python_makes_the_venv_anew(how: str, tmp_path: Path) -> None:
    _venv(tmp_path, OTHER_PYTHON)
    if how == "command line":
        plan = _make(tmp_path, "-n", "demo", f"PYTHON={sys.executable}").stdout
    else:
        plan = _make(tmp_path, "-n", "demo", env={"PYTHON": sys.executable}).stdout
    # before: only `.venv/bin/rpq demo`, on the old interpreter
    assert "but .venv runs Python 3.10 (/opt/other): making .venv anew" in plan
    lines = plan.splitlines()
    assert lines.index("rm -rf .venv") < lines.index(f"{sys.executable} -m venv .venv")
    assert '-e ".[all]"' in plan


def test_the_same_python_or_none_given_keeps_the_venv(tmp_path: Path) -> None:
    _venv(tmp_path, SAME_PYTHON)
    assert _make(tmp_path, "-n", "demo", f"PYTHON={sys.executable}").stdout == ".venv/bin/rpq demo\n"
    _venv(tmp_path / "other", OTHER_PYTHON)
    # No PYTHON: the .venv an earlier `PYTHON=... make demo` made stays, whatever `python3` is.
    assert _make(tmp_path / "other", "-n", "demo").stdout == ".venv/bin/rpq demo\n"


def test_a_python_that_does_not_run_is_refused_and_the_venv_kept(tmp_path: Path) -> None:
    _venv(tmp_path, OTHER_PYTHON)
    done = _make(tmp_path, "demo", "PYTHON=python3.99-missing")
    assert done.returncode != 0
    assert (
        "error: PYTHON=python3.99-missing is not a Python interpreter that runs; .venv is kept" in done.stderr
    )
    assert "make clean" in done.stderr
    assert (tmp_path / ".venv" / ".installed-runtime").exists()
