"""Constants and helpers for the CLI tests (a plain module, so test files can import it)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from typer.testing import Result

from runpod_queue import Client, Job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
API_KEY = "rpq-cli-secret-5d1e8a9c3f7b"  # distinctive, so a test can prove it is never printed

# The `rpq` fixture: rpq(*args, input=None, connect=True, env=None) -> Result
Invoke = Callable[..., Result]


def until_running(client: Client, endpoint: str, job_id: str) -> Job:
    """The job's first snapshot that is no longer IN_QUEUE (a worker took it)."""
    deadline = time.monotonic() + 10
    while True:
        job = client.endpoint(endpoint).status(job_id)
        if not job.is_in_queue or time.monotonic() > deadline:
            return job
        time.sleep(0.01)


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# answer(n, method, path, body) -> (HTTP status, JSON body); n counts requests from 1.
Answer = Callable[[int, str, str, Any], tuple[int, Any]]


class StandIn:
    """A loopback stand-in for RunPod for what the emulator (rightly) never does: it records each request
    as sent (method, path with query, JSON body) and answers as ``answer`` says — a 503 twice, a status
    RunPod's docs name but the emulator does not send, … Binds port 0 and reports the port it got."""

    def __init__(self, answer: Answer) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                recorder.requests.append((self.command, self.path, body))
                status, reply = answer(len(recorder.requests), self.command, self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v2"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


class WireRecorder(StandIn):
    """Answers every job call with one finished job: shows the exact wire values a command produces."""

    def __init__(self) -> None:
        super().__init__(lambda *_: (200, {"id": "job-1", "status": "COMPLETED", "output": "ok"}))
