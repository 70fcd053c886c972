"""RunPod's OpenAI-compatible routes: `/v2/<endpoint>/openai/v1/<route>` served as queue jobs.

What the platform does (RunPod docs, serverless/vllm/openai-compatibility; runpod-workers/worker-vllm
`src/handler.py`): each call becomes a job on the endpoint whose input is
`{"openai_route": "/v1/<route>", "openai_input": <the request body>}` (`GET /models` sends `{}`). The
worker yields the response JSON once or, for `"stream": true`, the raw server-sent-event text as it comes,
and runs with `return_aggregate_stream`. A worker error is yielded as `{"error": {...}}`, which the
official SDK turns into a FAILED job whose error is `str()` of that dict.

Here the job is an ordinary job of the core (it shows in /status, /health, `emu.jobs()`), run by the
endpoint's in-process handler or an external worker. This route is the job's stream reader: it takes the
job's chunks as they arrive, as `/stream` does, so a `/stream` call on such a job competes with it like a
second `/stream` reader would (it sees only chunks the route has not taken yet, usually none).

Answers, where RunPod documents nothing [ours]: the job is submitted like a runsync job (kept 1 min
after it ends); a FAILED job answers the worker's `{"error": {...}}` (its `code` as the status when it is
a 4xx/5xx, else 500) or, for a raised exception, its message with 500; TIMED_OUT 504, CANCELLED 503.
Every error body is OpenAI's `{"error": {"message", "type", "code"}}`, so the `openai` package raises
its usual exception classes.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import orjson

from runpod_queue._contract import RUNSYNC_PAYLOAD_LIMIT, JobStatus
from runpod_queue.emulator._http import EndpointRequest, HTTPError, Send, json_object, respond, type_name
from runpod_queue.emulator._jobs import encode_json

if TYPE_CHECKING:
    from runpod_queue.emulator._core import Core
    from runpod_queue.emulator._jobs import EndpointState, JobRecord
    from runpod_queue.emulator._ratelimit import RateLimiter

__all__ = ["OPENAI_LIMIT", "OPENAI_ROUTES", "OpenAIRoutes", "openai_unauthorized"]

# route under /openai/v1 → method (RunPod docs list the first three; worker-vllm's README adds the rest)
OPENAI_ROUTES: Final = {
    "chat/completions": "POST",
    "completions": "POST",
    "responses": "POST",
    "messages": "POST",
    "models": "GET",
}
OPENAI_LIMIT: Final = "openai"  # the rate-limit row (`_contract.LIMITS`) of RunPod's `/openai/*`

# How long one wait on the job lasts before it is renewed (RunPod seconds): the call itself is held until
# the job ends, which its executionTimeout bounds.
_HOLD_S: Final = 60.0
_DONE: Final = b"data: [DONE]"
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


async def openai_unauthorized(send: Send) -> None:
    """The 401 of `/openai/*` without a valid key, in OpenAI's shape. The app answers it before looking
    the endpoint up, so it is the same for every endpoint id and tells a stranger none of them."""
    await _error(
        send,
        401,
        "missing or invalid API key: send 'Authorization: Bearer <key>' (the openai package "
        "sends its api_key that way)",
        "invalid_request_error",
        "invalid_api_key",
    )


class OpenAIRoutes:
    """The `/openai/v1/*` routes of every endpoint; the app has checked the key."""

    def __init__(self, core: Core, limiter: RateLimiter) -> None:
        self.core = core
        self.limiter = limiter

    async def __call__(
        self,
        request: EndpointRequest,
        send: Send,
        *,
        worker_allowance: Callable[[EndpointState], int],
    ) -> None:
        endpoint = request.endpoint
        rest = request.rest
        if rest and rest[-1] == "":
            rest = rest[:-1]
        route = "/".join(rest[1:]) if rest[:1] == ["v1"] else ""
        method = OPENAI_ROUTES.get(route)
        if method is None:
            known = ", ".join(f"/openai/v1/{r}" for r in OPENAI_ROUTES)
            return await _error(
                send, 404, f"no route {request.scope['path']}; this endpoint serves {known}", "not_found"
            )
        if request.method != method:
            return await _error(
                send, 405, f"/openai/v1/{route} takes {method}, not {request.method}", "invalid_request_error"
            )
        gate = self.limiter.gate(endpoint.id, OPENAI_LIMIT)
        if gate is not None:
            wait = gate.try_acquire(self.core.clock.now(), worker_allowance(endpoint))
            if wait is not None:
                return await _error(
                    send,
                    429,
                    f"rate limit for /openai/* on endpoint {endpoint.id} exceeded; retry later",
                    "rate_limit_exceeded",
                    headers=[(b"retry-after", self.limiter.retry_after_header(wait))],
                )
        try:
            await self._serve(request, send, route, method)
        finally:
            if gate is not None:
                gate.release()

    async def _serve(self, request: EndpointRequest, send: Send, route: str, method: str) -> None:
        body: dict[str, Any] = {}
        stream = False
        if method == "POST":
            try:
                raw = await request.body(RUNSYNC_PAYLOAD_LIMIT, f"/openai/v1/{route}")
                body = json_object(raw, '{"model": "...", "messages": [...]}')
            except HTTPError as exc:
                return await _error(send, exc.status, exc.message, "invalid_request_error")
            stream = body.get("stream", False)
            if not isinstance(stream, bool):
                return await _error(
                    send,
                    400,
                    f'field "stream" must be true or false, got {type_name(stream)} {stream!r}',
                    "invalid_request_error",
                )
        job = self.core.submit(
            request.endpoint, {"openai_route": f"/v1/{route}", "openai_input": body}, sync=True
        )
        if stream:
            await self._stream(job, send)
        else:
            await self._whole(job, send)

    async def _next_chunks(self, job: JobRecord) -> list[bytes]:
        """Wait for chunks or the job's end; take the chunks (each a JSON document)."""
        await self.core.wait_stream(job, _HOLD_S)
        chunks = job.chunks
        if chunks:
            job.chunks = []
        return chunks

    async def _whole(self, job: JobRecord, send: Send) -> None:
        """A non-streaming call: the handler's output, once the job ends, is the HTTP body."""
        chunks: list[bytes] = []
        while not job.status.is_terminal:
            chunks.extend(await self._next_chunks(job))
        chunks.extend(job.chunks)
        job.chunks = []
        if job.status is not JobStatus.COMPLETED:
            return await _job_error(send, job)
        if chunks:  # a generator: one yield is the response (worker-vllm); several, their list
            body = chunks[0] if len(chunks) == 1 else b"[" + b",".join(chunks) + b"]"
            return await respond(send, 200, body)
        if job.output_json is None:
            return await _error(send, 500, "the handler returned no output", "server_error")
        await respond(send, 200, job.output_json)  # a plain function's return value

    async def _stream(self, job: JobRecord, send: Send) -> None:
        """A streaming call: each yielded chunk is forwarded as it arrives, then `data: [DONE]`.

        Headers wait for the first chunk, so a job that fails before yielding answers a proper error
        status; one that fails later ends the stream with an `error` event (the openai package raises it).
        """
        started = False
        seen_any = False
        tail = b""  # the end of what was sent, to see a `data: [DONE]` split across chunks

        async def forward(pieces: list[bytes]) -> None:
            nonlocal started, tail
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            for piece in pieces:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                tail = (tail + piece)[-64:]

        while True:
            chunks = await self._next_chunks(job)
            if chunks:
                seen_any = True
                await forward([_sse(orjson.loads(c)) for c in chunks])
            if job.status.is_terminal and not job.chunks:
                break
        if job.status is not JobStatus.COMPLETED:
            if not started:
                return await _job_error(send, job)
            _, error = _job_error_body(job)
            await forward([b"data: " + encode_json({"error": error}) + b"\n\n"])
        elif not seen_any and job.output_json is not None:
            # A plain (non-generator) handler: its whole output is the one event.
            await forward([_sse(orjson.loads(job.output_json))])
        if _DONE not in tail:
            await forward([_DONE + b"\n\n"])
        await send({"type": "http.response.body", "body": b""})


def _sse(value: Any) -> bytes:
    """A yielded chunk as SSE text: a string is already SSE text (worker-vllm forwards vLLM's bytes);
    anything else is one event of its JSON."""
    if isinstance(value, str):
        return value.encode()
    return b"data: " + encode_json(value) + b"\n\n"


def _job_error_body(job: JobRecord) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI error object for a job that did not complete."""
    if job.status is JobStatus.TIMED_OUT:
        return 504, _body(f"job {job.id} timed out (executionTimeout)", "timeout", None)
    if job.status is JobStatus.CANCELLED:
        return 503, _body(f"job {job.id} was cancelled", "cancelled", None)
    raw = job.error or "the handler failed"
    detail = _parse_error(raw)
    if isinstance(detail, dict):
        inner = detail.get("error", detail)
        if isinstance(inner, dict) and "message" in inner:
            # The worker's OpenAI-style error (worker-vllm yields {"error": {"message", "type", "code"}}).
            code = inner.get("code")
            status = code if isinstance(code, int) and 400 <= code <= 599 else 500
            return status, _body(str(inner["message"]), str(inner.get("type") or "server_error"), code)
        if "error_message" in detail:  # the official SDK's JSON for a raised exception
            return 500, _body(str(detail["error_message"]), "handler_error", None)
    return 500, _body(raw, "handler_error", None)


def _parse_error(raw: str) -> Any:
    """The job's error string as data: JSON, or the Python repr the official SDK makes of a yielded
    `{"error": {...}}` (`str(dict)`); literals only, nothing is evaluated."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    if raw.startswith("{"):
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return None


def _body(message: str, kind: str, code: Any) -> dict[str, Any]:
    return {"message": message, "type": kind, "code": code}


async def _job_error(send: Send, job: JobRecord) -> None:
    status, error = _job_error_body(job)
    await respond(send, status, {"error": error})


async def _error(
    send: Send,
    status: int,
    message: str,
    kind: str,
    code: Any = None,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await respond(send, status, {"error": _body(message, kind, code)}, headers)
