"""What the sdist and the wheel carry: built from a copy of the project with a working tree's leftovers
planted in it (caches, .hypothesis/, .ci/, compiled files), so the build configuration is what keeps them
out, not a clean checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pytest

from runpod_queue import __version__

ROOT = Path(__file__).resolve().parent.parent

LEFTOVERS = (
    ".hypothesis/examples/0a1b/2c3d",
    ".pytest_cache/v/cache/lastfailed",
    ".mypy_cache/3.11/runpod_queue.json",
    ".ruff_cache/0.6.0/123",
    ".ci/scratch.log",
    "src/runpod_queue/__pycache__/_client.cpython-311.pyc",
    "tests/__pycache__/test_packaging.cpython-311-pytest-9.0.pyc",
    "examples/__pycache__/echo.cpython-311.pyc",
    "dist/runpod_queue-0.9.0.tar.gz",
    "runpod.sqlite",
)
_DIST_INFO = f"runpod_queue-{__version__}.dist-info"
# Directory names no artifact may contain, at any depth.
JUNK_DIRS = {
    ".hypothesis",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".ci",
    ".venv",
    ".git",
    "__pycache__",
}


class Built(NamedTuple):
    sdist: list[str]  # paths inside the sdist's top folder
    wheel: list[str]
    metadata: str  # the wheel's METADATA


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Both artifacts built by hatchling, the backend `pip install` and `python -m build` call."""
    base = tmp_path_factory.mktemp("packaging")
    project = base / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".venv", ".git", *JUNK_DIRS, "*.pyc"))
    for leftover in LEFTOVERS:
        (project / leftover).parent.mkdir(parents=True, exist_ok=True)
        (project / leftover).write_text("leftover\n")
    out = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
        cwd=project,
        check=True,
        capture_output=True,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        sdist_names = [PurePosixPath(*PurePosixPath(name).parts[1:]).as_posix() for name in tar.getnames()]
    with zipfile.ZipFile(wheel) as whl:
        metadata = whl.read(f"{_DIST_INFO}/METADATA").decode()
        return Built(sdist_names, whl.namelist(), metadata)


def _junk(names: list[str]) -> list[str]:
    return [
        name
        for name in names
        if JUNK_DIRS.intersection(PurePosixPath(name).parts[:-1])
        or name.endswith((".pyc", ".pyo", ".sqlite"))
        or name.startswith(("dist/", "build/"))
    ]


def test_the_sdist_has_the_project_and_none_of_a_working_trees_leftovers(built: Built) -> None:
    sdist = built.sdist
    assert _junk(sdist) == []  # before: .hypothesis/ and .ci/run shipped
    for required in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "PKG-INFO", "Makefile"):
        assert required in sdist
    assert "src/runpod_queue/py.typed" in sdist
    # A packager rebuilds and tests from the sdist: the suite and what it reads come along.
    assert "tests/test_packaging.py" in sdist
    assert "examples/testing/test_summarizer.py" in sdist
    assert {PurePosixPath(name).parts[0] for name in sdist} <= {
        "src", "tests", "examples", "docs", "bench", "README.md", "CHANGELOG.md", "LICENSE", "Makefile",
        "pyproject.toml", "PKG-INFO", ".gitignore",
    }  # fmt: skip


def test_the_wheel_has_the_package_and_the_demo_handlers_but_no_tests(built: Built) -> None:
    wheel = built.wheel
    assert _junk(wheel) == []
    tests = [name for name in wheel if PurePosixPath(name).name.startswith(("test_", "conftest"))]
    assert tests == []  # before: runpod_queue/_examples/testing/test_summarizer.py
    assert {PurePosixPath(name).parts[0] for name in wheel} == {"runpod_queue", _DIST_INFO}
    assert "runpod_queue/py.typed" in wheel
    assert f"{_DIST_INFO}/licenses/LICENSE" in wheel
    # Every handler in examples/ ships for `rpq demo` (force-include names them one by one).
    handlers = {path.name for path in (ROOT / "examples").glob("*.py")}
    shipped = {PurePosixPath(name).name for name in wheel if name.startswith("runpod_queue/_examples/")}
    assert shipped == handlers


def test_the_wheel_metadata_declares_the_licence_and_no_unused_dependency(built: Built) -> None:
    assert "License-Expression: MIT" in built.metadata.splitlines()
    assert "License-File: LICENSE" in built.metadata.splitlines()
    requires = [line for line in built.metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires and not [line for line in requires if "sniffio" in line]  # nothing imports it
