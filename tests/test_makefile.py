"""`make demo` installs what the demo runs; `make test` and `make lint` (CI) the dev tools."""

from __future__ import annotations

import shutil
import subprocess
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
