"""The one `emu` fixture: an in-process emulator on loopback, built as `emu_setup` says.

A folder's conftest.py (or a test module) overrides `emu_setup` to serve its own handlers and options;
without one, `emu` serves `echo` and `fail` (see shared_support). A module that needs several setups
parametrizes it: ``@pytest.mark.parametrize("emu_setup", [A, B], indirect=True, scope="module")``.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

# Bytecode caches, even where the environment sets PYTHONDONTWRITEBYTECODE (this machine's sessions do):
# without them every xdist worker compiles and assertion-rewrites all ~100 test modules again (pytest keeps
# rewritten modules only as .pyc) and every subprocess a test starts (`rpq`, doc pages, workers) compiles
# the package again. Measured on 2 cores: collecting the suite 15.9 -> 6.9 CPU-s per process. Set before
# the imports below, so the package is cached too; the environment change reaches the subprocesses. The
# caches are the usual gitignored __pycache__ directories, which the sdist and wheel exclude.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


# One CA certificate instead of certifi's ~150: httpx loads the whole bundle for every client it makes
# with the default `verify` (~33 ms CPU each, measured), and the tests make about a thousand
# (`httpx.get(...)`, a fresh `httpx.Client()` per helper call, in this process and in the `rpq`
# processes they start, which inherit the environment). No test reaches a TLS server beyond loopback;
# one holding a certificate of its own still fails to verify against this file, as it would against
# certifi's. `SSL_CERT_FILE` is httpx's and Python's documented override.
def _one_ca_file() -> str:
    import re
    import tempfile
    from pathlib import Path

    import certifi

    first = re.search(
        r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", Path(certifi.where()).read_text(), re.S
    )
    assert first is not None, "certifi's bundle holds no certificate"
    path = Path(tempfile.gettempdir()) / f"runpod-queue-tests-one-ca-{os.getuid()}.pem"
    if not path.exists() or path.read_text() != first.group(0):
        staged = path.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(first.group(0))
        staged.replace(path)
    return str(path)


os.environ["SSL_CERT_FILE"] = _one_ca_file()


# The official runpod SDK's import runs py-cpuinfo in a process of its own (1.2 CPU-s, over twenty times
# a run): the processes the tests start, and this one, find a cached copy of its answer first
# (tests/cpuinfo_cache/cpuinfo.py says how).
_CPUINFO_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpuinfo_cache")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_CPUINFO_CACHE, os.environ.get("PYTHONPATH")]))
sys.path.insert(0, _CPUINFO_CACHE)


def _build_each_rpq_command_once() -> None:
    """typer's CliRunner rebuilds the click command from the app on every invoke (~50 ms: every
    command's signature and string annotations evaluated); the tests invoke `rpq` in-process hundreds of
    times over an app whose commands are all registered at import. Keyed by what could change it."""
    try:
        import typer.testing
    except ImportError:  # a bare install: no CLI tests run
        return
    build = typer.testing._get_command
    built: dict[tuple[int, int, int], tuple[Any, Any]] = {}

    def once(app: Any) -> Any:
        key = (id(app), len(app.registered_commands), len(app.registered_groups))
        if key not in built:
            built[key] = (app, build(app))  # the app held too: its id is never reused by another
        return built[key][1]

    typer.testing._get_command = once


_build_each_rpq_command_once()

import pytest  # noqa: E402

from runpod_queue.emulator import Emulator  # noqa: E402
from shared_support import DEFAULT_SETUP, EmuSetup  # noqa: E402

# A refused loopback port in a test means "nothing will listen": no grace for a starting emulator, here or
# in the rpq subprocesses tests start (tests/cli/test_cli_startup.py and the README tour cover the grace).
os.environ["RPQ_STARTUP_WAIT"] = "0"


@pytest.fixture(scope="module")
def emu_setup(request: pytest.FixtureRequest) -> EmuSetup:
    setup = getattr(request, "param", DEFAULT_SETUP)
    assert isinstance(setup, EmuSetup), f"emu_setup takes an EmuSetup, got {setup!r}"
    return setup


@pytest.fixture(scope="session")
def shared_emulators() -> Iterator[dict[EmuSetup, Emulator]]:
    """Emulators of `shared` setups, started on first use and stopped when the session ends."""
    started: dict[EmuSetup, Emulator] = {}
    yield started
    for setup, emulator in started.items():
        setup.stop(emulator)


@pytest.fixture(scope="module")
def emu(emu_setup: EmuSetup, shared_emulators: dict[EmuSetup, Emulator]) -> Iterator[Emulator]:
    if emu_setup.shared:
        emulator = shared_emulators.get(emu_setup)
        if emulator is None:
            emulator = shared_emulators[emu_setup] = emu_setup.start()
        yield emulator
        return
    emulator = emu_setup.start()
    try:
        yield emulator
    finally:
        emu_setup.stop(emulator)


# The longest files start first (most wall-clock seconds first, as measured with `--durations=0` on 2
# cores), so xdist's last worker is not left alone with one of them at the end; most of them mostly wait
# (subprocesses, a browser), so starting them early overlaps the waits with the CPU-bound files.
_LONG_FILES = (
    "tests/test_docs_blocks.py",  # `make docs-test`: one page after another
    "tests/emulator/test_external_workers.py",  # official-SDK worker processes
    "tests/emulator/test_loading_and_serve.py",  # `rpq serve` processes stopped by signals
    "tests/storage/test_store.py",
    "tests/console/test_console_browser.py",  # headless Chromium
    "tests/emulator/test_external_cli.py",
    "tests/storage/test_batch_uploads.py",
    "tests/batch/test_batch_native.py",  # 12,000 batch requests (issue 25's done-when)
    "tests/emulator/test_openai_external.py",
    "tests/batch/test_batch_cli.py",
    "tests/emulator/test_record_replay.py",
    "tests/emulator/test_fitness.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # xdist would reorder the files by their number of tests (most first), which sends the one-test files
    # above (the browser, the official-worker S3 round trip) to the very end: pyproject's addopts turn
    # that off (--no-loadscope-reorder) and the same rule is applied here to the files not listed.
    counts = Counter(item.nodeid.split("::", 1)[0] for item in items)

    def rank(item: pytest.Item) -> tuple[int, int]:
        path = item.nodeid.split("::", 1)[0]
        return (_LONG_FILES.index(path) if path in _LONG_FILES else len(_LONG_FILES), -counts[path])

    items.sort(key=rank)  # stable: every file keeps its own order
