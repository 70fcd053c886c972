"""`rpq` with a status it does not know (RunPod's docs name RUNNING): it keeps polling, prints the status
as sent, and never fails on it. Against a loopback stand-in that says RUNNING twice, then COMPLETED."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cli_support import Invoke


@pytest.fixture
def running_twice() -> Iterator[str]:
    seen = {"count": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen["count"] += 1
            status = "COMPLETED" if seen["count"] > 2 else "RUNNING"
            body: dict[str, Any] = {"id": "job-1", "status": status}
            if status == "COMPLETED":
                body["output"] = "done"
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2"
    finally:
        server.shutdown()
        server.server_close()


def test_rpq_status_shows_an_unknown_status_as_pending(rpq: Invoke, running_twice: str) -> None:
    result = rpq("status", "ep", "job-1", "--json", "--base-url", running_twice, connect=False)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "RUNNING"


def test_rpq_wait_polls_through_an_unknown_status(rpq: Invoke, running_twice: str) -> None:
    result = rpq("wait", "ep", "job-1", "--timeout", "30s", "--base-url", running_twice, connect=False)
    assert result.exit_code == 0, result.stderr
    assert "done" in result.stdout
