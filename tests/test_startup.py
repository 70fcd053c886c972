"""What a process pays to start: `import runpod_queue` and `rpq` load only what they use (_startup.py).

Every `rpq` command and every script or handler process importing the package pays its imports; the
suite starts many of them (doc pages, CLI and worker subprocesses). Each test runs a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_the_package_and_the_cli_start_without_asyncio_or_httpx_own_cli() -> None:
    # httpx's CLI (click, pygments, rich's syntax/progress) and asyncio: ~0.2 s CPU that no sync command uses
    code = (
        "import sys, json, runpod_queue, runpod_queue.cli._app as app\n"
        "app.load_commands()\n"
        "mods = ('asyncio', 'click', 'pygments', 'rich.syntax', 'rich.progress', 'httpx._main', 'aiohttp')\n"
        "print(json.dumps([m for m in mods if m in sys.modules]))"
    )
    assert json.loads(_fresh(code)) == []


def test_httpx_main_still_runs_the_httpx_command() -> None:
    code = (
        "import runpod_queue, httpx\n"
        "try:\n"
        "    httpx.main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
    )
    out = _fresh(code)
    assert "Usage: httpx" in out and "exit 0" in out


def test_a_process_that_imported_httpx_first_keeps_it_as_it_was() -> None:
    out = _fresh(
        "import sys, httpx, runpod_queue\nprint(type(httpx.main).__name__, 'httpx._main' in sys.modules)"
    )
    assert out.split() == ["Command", "True"]


def test_a_sync_connection_failure_is_classified_without_loading_aiohttp() -> None:
    code = (
        "import sys, runpod_queue\n"
        "from runpod_queue import Client, APIConnectionError, Retries\n"
        "with Client('k', base_url='http://127.0.0.1:9/v2', retries=Retries.off()) as c:\n"
        "    try:\n"
        "        c.endpoint('e').health()\n"
        "    except APIConnectionError as exc:\n"
        "        print(type(exc).__name__, 'aiohttp' in sys.modules)\n"
    )
    assert _fresh(code).split() == ["APIConnectionError", "False"]
