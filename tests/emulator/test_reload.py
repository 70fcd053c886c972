"""`rpq serve --reload`: editing a handler file changes the next job's answer with no restart; a file
that stops importing keeps the old handler and says why."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

HANDLER = "def handler(job):\n    return {{'version': {version}}}\n"


def _answer(http: httpx.Client, base: str) -> object:
    return http.post(f"{base}/h/runsync", json={"input": {}}).json().get("output")


def _until(check: object, deadline_s: float = 30.0) -> None:
    """Poll `check()` until true; the watcher reports a change within its debounce, but CI is busy."""
    deadline = time.monotonic() + deadline_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the reload did not happen"
        time.sleep(0.05)


def test_an_edit_changes_the_next_answer_and_a_broken_edit_keeps_the_old(tmp_path: Path) -> None:
    source = tmp_path / "h.py"
    source.write_text(HANDLER.format(version=1))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", "serve", f"h={source}", "--reload", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    errors: queue.SimpleQueue[str] = queue.SimpleQueue()
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr
    threading.Thread(target=lambda: [errors.put(line) for line in stderr], daemon=True).start()
    try:
        match = re.search(r"(http://127\.0\.0\.1:\d+/v2)", proc.stdout.readline())
        assert match
        base = match.group(1)
        with httpx.Client(timeout=10) as http:
            assert _answer(http, base) == {"version": 1}
            source.write_text(HANDLER.format(version=2))
            _until(lambda: _answer(http, base) == {"version": 2})
            source.write_text("def handler(job)\n    return 3\n")  # a syntax error
            seen: list[str] = []

            def said() -> bool:
                while not errors.empty():
                    seen.append(errors.get())
                return any("reload of h failed, the old handler stays" in line for line in seen)

            _until(said)
            assert "SyntaxError" in "".join(seen)
            assert _answer(http, base) == {"version": 2}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    assert proc.returncode == 0
