"""`rpq record`: a local proxy in front of a real base URL that writes what each job did to a cassette.

The proxy is an ASGI app on the emulator's server stack (uvicorn + httptools, `_serving.guarded_config`)
and forwards with httpx, both already dependencies: nothing new to install, and the same hardened
listener the emulator uses. Every request under ``/v2/`` is forwarded unchanged (method, path, query,
body, headers but hop-by-hop ones) to the base URL, and its answer comes back unchanged (status, body,
headers but hop-by-hop and encoding ones: httpx has decoded the body).

What is written (`cassette`): per job, from the answers the proxy forwards: the endpoint id, the input
(``input`` of the /run or /runsync body; not the webhook, not ``s3Config`` — it holds credentials),
each status seen with the seconds since submission, RunPod's ``delayTime``/``executionTime``, the output
or error, and the chunks /stream handed out. Never a header: the API key is not written, and neither is
the base URL's user/password (the header's ``source`` is the host only).

A job's line is written once its end is known with its output: a COMPLETED/FAILED answer of /runsync,
/status or /status-sync, or a CANCELLED/TIMED_OUT status; a job seen ending only through /stream waits
for a /status of it, or the proxy's stop, which writes every job still open as last seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import urlsplit

import httpx
import orjson

from runpod_queue._transport import _tls_context
from runpod_queue.emulator._cassette import CASSETTE_FORMAT, CASSETTE_VERSION, Cassette, OnMiss, Recording
from runpod_queue.emulator._http import Receive, Scope, Send, respond
from runpod_queue.errors import ConfigurationError

__all__ = ["CassetteWriter", "RecordingProxy", "source_host"]

log = logging.getLogger("runpod_queue.record")

_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"host", b"content-length"}
)  # fmt: skip
_DROP_ANSWER: Final = _HOP | {b"content-encoding"}
_TERMINAL: Final = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
_BODY_LIMIT: Final = 25 * 1024 * 1024  # above RunPod's largest accepted body (/run: 10 MB, /runsync: 20 MB)
_JOB_OPS: Final = ("status", "status-sync", "stream", "cancel", "retry")


def source_host(url: str) -> str:
    """The host (and port) of `url`, without scheme, user, password, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


@dataclass(slots=True)
class _Job:
    endpoint: str
    job_id: str
    input: Any
    t0: float
    statuses: list[tuple[float, str]] = field(default_factory=list)
    stream: list[tuple[float, Any]] = field(default_factory=list)
    output: Any = None
    error: str | None = None
    has_result: bool = False
    delay_ms: int | None = None
    execution_ms: int | None = None

    def saw(self, now: float, body: dict[str, Any]) -> None:
        status = body.get("status")
        if isinstance(status, str) and (not self.statuses or self.statuses[-1][1] != status):
            self.statuses.append((now - self.t0, status))
        if isinstance(body.get("delayTime"), int | float):
            self.delay_ms = int(body["delayTime"])
        if isinstance(body.get("executionTime"), int | float):
            self.execution_ms = int(body["executionTime"])
        if "output" in body and status in _TERMINAL:
            self.output, self.has_result = body["output"], True
        if body.get("error") is not None:
            error = body["error"]
            self.error = error if isinstance(error, str) else orjson.dumps(error).decode()
            self.has_result = True

    @property
    def status(self) -> str:
        return self.statuses[-1][1] if self.statuses else "IN_QUEUE"

    @property
    def done(self) -> bool:
        status = self.status
        return status in ("CANCELLED", "TIMED_OUT") or (status in _TERMINAL and self.has_result)

    def recording(self) -> Recording:
        status = self.status
        error = self.error if status != "COMPLETED" else None
        if status == "FAILED" and error is None:
            error = "failed (the recorder saw no error message)"
        delay = self.delay_ms / 1000 if self.delay_ms is not None else _first(self.statuses, "IN_PROGRESS")
        execution = self.execution_ms / 1000 if self.execution_ms is not None else 0.0
        if self.execution_ms is None and self.statuses and status in _TERMINAL:
            execution = max(0.0, self.statuses[-1][0] - delay)
        return Recording(
            endpoint=self.endpoint,
            input=self.input,
            status=status,
            output=None if error is not None else self.output,
            error=error,
            delay=delay,
            execution=execution,
            stream=tuple(self.stream),
            statuses=tuple(self.statuses),
            job_id=self.job_id,
        )


def _first(statuses: list[tuple[float, str]], status: str) -> float:
    return next((t for t, s in statuses if s == status), 0.0)


class CassetteWriter:
    """Appends job lines to a cassette file, one flushed line per job (a killed proxy loses only the
    jobs still open)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source: str,
        on_miss: OnMiss = "error",
        mode: str = "new",
    ) -> None:
        """`mode`: "new" (refuse an existing file), "overwrite", or "append" (after a valid cassette's
        lines, its header kept)."""
        self.path = Path(path)
        self.written = 0
        self._mode = mode
        self._source, self._on_miss = source, on_miss
        self._file: IO[bytes] | None = None
        if mode == "append" and self.path.exists():
            Cassette.load(self.path)  # refuse to add to a broken or foreign file
        elif mode == "new" and self.path.exists():
            raise ConfigurationError(
                f"{self.path} exists: it may hold recordings you paid for; use --append to add to it, "
                "--overwrite to replace it, or another --to file"
            )
        elif not self.path.parent.is_dir():
            raise ConfigurationError(
                f"{self.path}: cannot write the cassette: no directory {self.path.parent}"
            )

    def open(self) -> None:
        """Open the file (and write the header of a new one): once the proxy's port is bound."""
        if self._mode == "append" and self.path.exists():
            self._file = self.path.open("ab")
            return
        try:
            self._file = self.path.open("wb")
        except OSError as exc:
            raise ConfigurationError(
                f"{self.path}: cannot write the cassette: {exc.strerror or exc}"
            ) from None
        recorded_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        header = {
            "format": CASSETTE_FORMAT,
            "version": CASSETTE_VERSION,
            "recorded_at": recorded_at,
            "source": self._source,
            "on_miss": self._on_miss,
        }
        self._line(header)

    def _line(self, value: dict[str, Any]) -> None:
        if self._file is None:
            self.open()
        assert self._file is not None
        self._file.write(orjson.dumps(value) + b"\n")
        self._file.flush()

    def write(self, recording: Recording) -> None:
        """Write one job's line."""
        self._line(recording.to_json())
        self.written += 1

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()


class Recorder:
    """The proxy's ASGI app: forwards, and hands what it sees to the writer."""

    def __init__(
        self,
        target: str,
        writer: CassetteWriter,
        *,
        on_job: Callable[[Recording], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target.rstrip("/")
        self.writer = writer
        self.jobs: dict[str, _Job] = {}
        self._on_job = on_job
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # RunPod holds /runsync and /status-sync up to a few minutes: no read timeout of ours ends them.
            timeout = httpx.Timeout(connect=15.0, read=600.0, write=60.0, pool=60.0)
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
            self._client = httpx.AsyncClient(
                timeout=timeout, limits=limits, follow_redirects=False, verify=_tls_context()
            )
        return self._client

    async def aclose(self) -> None:
        """Close the forwarding client; write every job still open as last seen."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.flush()

    def flush(self) -> None:
        """Write every job not written yet (the proxy stops)."""
        for job in list(self.jobs.values()):
            self._write(job)

    def _write(self, job: _Job) -> None:
        if self.jobs.pop(job.job_id, None) is None:
            return
        recording = job.recording()
        self.writer.write(recording)
        if self._on_job is not None:
            self._on_job(recording)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if not path.startswith("/v2/"):
            await respond(send, 404, {"error": f"no route {path}: the recorder forwards /v2/<endpoint_id>/…"})
            return
        body = await _read_body(receive)
        if body is None:
            await respond(send, 413, {"error": f"request body over {_BODY_LIMIT} bytes"})
            return
        started = self._clock()
        url = self.target + path[3:]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        try:
            answer = await self._http().request(scope["method"], url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            # Not the URL with its query, not a header: only what failed and where.
            await respond(
                send,
                502,
                {"error": f"recorder: {source_host(self.target)} unreachable: {type(exc).__name__}"},
            )
            return
        content = answer.content
        out_headers = [(k, v) for k, v in answer.headers.raw if k.lower() not in _DROP_ANSWER]
        out_headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out_headers})
        await send({"type": "http.response.body", "body": content})
        if answer.status_code == 200:
            try:
                self.observe(scope["method"], path, body, content, started)
            except Exception:  # a surprising answer must never break the proxying
                log.exception("recorder: could not record %s %s", scope["method"], path)

    def observe(self, method: str, path: str, body: bytes, answer: bytes, started: float) -> None:
        """Record what a forwarded 200 answer says about its job."""
        parts = path.strip("/").split("/")  # ["v2", endpoint, operation, *rest]
        if len(parts) < 3:
            return
        endpoint, operation = parts[1], parts[2]
        now = self._clock()
        try:
            data = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        if operation in ("run", "runsync") and len(parts) == 3:
            job_id = data.get("id")
            if not isinstance(job_id, str):
                return
            try:
                request = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                return
            job_input = request.get("input") if isinstance(request, dict) else None
            job = self.jobs[job_id] = _Job(endpoint, job_id, job_input, started)
            job.statuses.append((0.0, "IN_QUEUE"))
        elif operation in _JOB_OPS and len(parts) == 4:
            job_or_none = self.jobs.get(parts[3])
            if job_or_none is None:
                return  # submitted before the recorder started, or already written
            job = job_or_none
            if operation == "retry":
                job.output, job.error, job.has_result = None, None, False
                job.stream.clear()
                job.delay_ms = job.execution_ms = None
            if operation == "stream":
                offset = now - job.t0
                for item in data.get("stream") or []:
                    if isinstance(item, dict) and "output" in item:
                        job.stream.append((offset, item["output"]))
        else:
            return
        job.saw(now, data)
        if job.done:
            self._write(job)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _BODY_LIMIT:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class RecordingProxy:
    """`Recorder` on uvicorn: `start()` in a thread (tests), or `serve_forever()` (``rpq record``).

    Args:
        target: The base URL to forward to (``https://api.runpod.ai/v2``, or an emulator's base_url).
        to: The cassette file to write.
        host: The address to bind (127.0.0.1: nobody else can use your key through it).
        port: The port (0: a free one).
        mode: "new" (refuse an existing file), "overwrite" or "append".
        on_miss: The rule written in the header for replay's unknown inputs.
        on_job: Called with each recording as it is written (the CLI prints a line).
    """

    def __init__(
        self,
        target: str,
        to: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: str = "new",
        on_miss: OnMiss = "error",
        on_job: Callable[[Recording], None] | None = None,
    ) -> None:
        self.writer = CassetteWriter(to, source=source_host(target), on_miss=on_miss, mode=mode)
        self.recorder = Recorder(target, self.writer, on_job=on_job)
        self.host, self.port = host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The proxy's base URL, to give a client instead of the real one."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v2"

    def _make(self) -> Any:
        import uvicorn

        from runpod_queue._net import listen_socket
        from runpod_queue._serving import guarded_config

        sock = listen_socket(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        try:
            self.writer.open()
        except BaseException:
            sock.close()
            raise
        config = guarded_config(
            self.recorder,
            limit_concurrency=None,
            ws="none",
            lifespan="on",
            log_level="warning",
            access_log=False,
        )
        return uvicorn.Server(config), sock

    def start(self) -> RecordingProxy:
        """Serve in a background thread; returns once the port accepts connections."""
        server, sock = self._make()
        self._server = server

        @contextlib.contextmanager
        def no_signals() -> Iterator[None]:
            yield

        server.capture_signals = no_signals

        def main() -> None:
            asyncio.run(server.serve(sockets=[sock]))
            sock.close()

        self._thread = threading.Thread(target=main, name=f"rpq-record-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the recording proxy failed to start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving; every job still open is written as last seen, and the file closed."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
        self.recorder.flush()
        self.writer.close()

    def serve_forever(self, on_ready: Callable[[RecordingProxy], None] | None = None) -> None:
        """Serve in this thread until Ctrl-C / SIGTERM; then write the open jobs and close the file."""
        server, sock = self._make()
        if on_ready is not None:
            on_ready(self)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            self.recorder.flush()
            self.writer.close()
