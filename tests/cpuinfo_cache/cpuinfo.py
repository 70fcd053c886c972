"""py-cpuinfo for the test processes, answering from a cache of the real module's answer.

The official `runpod` SDK calls `cpuinfo.get_cpu_info()` when it is imported (its debugger's processor
name), and py-cpuinfo answers by running itself in a new Python process: 1.2 CPU-s per `import runpod`
(measured), paid by every official worker process the tests start and every test process that imports
the SDK — over twenty per suite run. tests/conftest.py puts this folder first on PYTHONPATH. The answer
is the real module's, run once per machine and user and kept in the temp folder; the SDK's code is not
touched. Nothing else in py-cpuinfo is used by the SDK.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
_CACHE = Path(tempfile.gettempdir()) / f"runpod-queue-tests-cpuinfo-{os.getuid()}.json"


def _real_module_file() -> str:
    path = [entry for entry in sys.path if str(Path(entry or ".").resolve()) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("cpuinfo", path)
    if spec is None or spec.origin is None:
        raise ImportError("py-cpuinfo is not installed (the official runpod SDK needs it)")
    return str(Path(spec.origin).with_name("cpuinfo.py"))  # the package's module, which runs as a script


def get_cpu_info_json() -> str:
    """The real `get_cpu_info_json()`'s answer: its own process once, the cached answer after."""
    try:
        return _CACHE.read_text()
    except FileNotFoundError:
        pass
    answer = subprocess.run(  # as py-cpuinfo runs itself
        [sys.executable, _real_module_file(), "--json"], capture_output=True, check=False, text=True
    )
    if answer.returncode != 0:
        return "{}"  # py-cpuinfo's own answer to a failed run; not kept, so the next run tries again
    output = answer.stdout
    staged = _CACHE.with_suffix(f".{os.getpid()}.tmp")
    staged.write_text(output)
    staged.replace(_CACHE)
    return output


def get_cpu_info() -> dict[str, Any]:
    """The real `get_cpu_info()`'s answer (a dict), from the cache."""
    info: dict[str, Any] = json.loads(get_cpu_info_json())
    return info
