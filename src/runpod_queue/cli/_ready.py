"""A loopback server given a moment to start: ``rpq serve … &`` and the next command, pasted together.

``rpq serve`` needs about 0.3 s to import and bind; a command pasted on the line after it would find
nothing listening and fail. So before its first request to a loopback base URL, a command checks that
something accepts connections there, and while the port refuses, it waits a little (saying so once).

This waits for the port to appear; it does not retry the request. Once something listens, or the wait is
over, the command's requests go out as ever: a loopback address that still refuses is reported after one
attempt, with "is the emulator running?". A remote server is never probed.
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit

from rich.console import Console

from runpod_queue._settings import is_loopback

__all__ = ["ENV_STARTUP_WAIT", "STARTUP_WAIT", "startup_wait", "wait_for_listener"]

STARTUP_WAIT = 5.0  # seconds; `rpq serve` binds in ~0.3 s, so this covers a slow or busy machine
# Seconds to wait instead (0 turns the wait off: scripts and test suites that start no server just before).
ENV_STARTUP_WAIT = "RPQ_STARTUP_WAIT"
_POLL_INTERVAL = 0.05  # a refused loopback connect costs microseconds: poll often, start promptly
_CONNECT_TIMEOUT = 1.0  # a loopback connect either succeeds or is refused at once; this is a backstop


def startup_wait() -> float:
    """``$RPQ_STARTUP_WAIT`` seconds when set to a number >= 0, else ``STARTUP_WAIT``."""
    text = os.environ.get(ENV_STARTUP_WAIT, "").strip()
    try:
        value = float(text)
    except ValueError:
        return STARTUP_WAIT
    return value if value >= 0 else STARTUP_WAIT


def wait_for_listener(base_url: str, err: Console) -> None:
    """Return once something accepts connections at a loopback ``base_url``, or after ``startup_wait()``."""
    if not is_loopback(base_url):
        return
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + startup_wait()
    said = False
    while True:
        try:
            with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT):
                return
        except ConnectionRefusedError:
            pass
        except OSError:
            return  # not "nothing listens yet": the request will say what it is
        if time.monotonic() >= deadline:
            return
        if not said:
            err.print(f"waiting for the emulator on {host}:{port}…", markup=False, highlight=False)
            said = True
        time.sleep(_POLL_INTERVAL)
