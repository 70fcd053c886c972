"""HTTP primitives of the emulator's lean ASGI app: requests, error answers, responses, JSON bodies.

Shared by the public routes (`app`), the worker protocol (`external`) and the emulator's own routes
(`control`), none of which import each other. Every 4xx/5xx answer is `{"error": "<what is wrong and how
to fix it>"}` [ours].
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from runpod_queue.emulator._jobs import decode_json, encode_json

if TYPE_CHECKING:
    from runpod_queue.emulator._jobs import EndpointState

__all__ = [
    "MAX_JSON_DEPTH",
    "EndpointRequest",
    "HTTPError",
    "Receive",
    "Request",
    "Route",
    "Scope",
    "Send",
    "answer",
    "drop",
    "json_object",
    "respond",
    "respond_empty",
    "type_name",
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("runpod_queue.emulator")

_JSON_HEADERS: Final = [(b"content-type", b"application/json")]
MB: Final = 1_000_000
#: The deepest JSON a request body may nest (objects and arrays; the body itself is level 1). Real inputs
#: (chat messages, tool schemas) stay under 20; orjson encodes at most 254, and an input is written back
#: inside a few levels of answer (`/status`, `/_emulator/jobs`, a webhook), so 128 keeps every accepted
#: input encodable with room to spare.
MAX_JSON_DEPTH: Final = 128


class HTTPError(Exception):
    """Raised inside a route: becomes `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class Request:
    """What a route needs from the ASGI scope, parsed lazily. `rest` is the path after the operation."""

    __slots__ = ("_query", "method", "raw_query", "receive", "rest", "scope")

    def __init__(self, scope: Scope, receive: Receive, rest: list[str]):
        self.scope: Scope = scope
        self.receive: Receive = receive
        self.method: str = scope["method"]
        self.rest: list[str] = rest
        self.raw_query: bytes = scope.get("query_string", b"")
        self._query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.raw_query.decode("latin-1"))) if self.raw_query else {}
        return self._query

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lowercase bytes), or None."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value  # type: ignore[no-any-return]
        return None

    async def body(self, limit: int, what: str) -> bytes:
        """The whole body, refused with 413 past `limit` bytes (declared or while reading)."""
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit, what)
        message = await self.receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")  # the usual small body: one message
            if len(body) > limit:
                raise _too_large(len(body), limit, what)
            return body
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limit, what)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await self.receive()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def int_query(self, name: str, *, low: int, high: int, default: int | None = None) -> int | None:
        """An integer query parameter in milliseconds (the wire's unit), checked against [low, high]."""
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(400, f"query parameter {name}={raw!r} must be an integer number of ms") from None
        if not low <= value <= high:
            raise HTTPError(400, f"query parameter {name}={value} is out of range: use {low}..{high} ms")
        return value


class EndpointRequest(Request):
    """A request under `/v2/<endpoint>/`: the endpoint it addresses is known."""

    __slots__ = ("endpoint",)

    def __init__(self, scope: Scope, receive: Receive, endpoint: EndpointState, rest: list[str]):
        # Request.__init__ spelled out: one frame less on every public request.
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.rest: list[str] = rest
        self.raw_query: bytes = scope.get("query_string", b"")
        self._query = None
        self.endpoint: EndpointState = endpoint


Route = Callable[[Any], Awaitable[tuple[int, Any]]]


def _too_large(size: int, limit: int, what: str) -> HTTPError:
    return HTTPError(
        413,
        f"request body is {size / MB:.1f} MB; {what} accepts at most {limit // MB} MB. "
        "Put large inputs in object storage and pass a URL (see s3Config)",
    )


def json_object(body: bytes, example: str = '{"input": {...}}') -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying what was sent instead (nested past
    `MAX_JSON_DEPTH` levels included)."""
    if not body:
        raise HTTPError(400, f"request body is empty: send a JSON object such as {example}")
    try:
        data = decode_json(body)  # every number exact, as the official worker's json keeps it
    except ValueError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPError(400, f"request body must be a JSON object, got {type_name(data)}")
    # Counting brackets (in C) first: a body with fewer than the limit cannot be nested that deep, so
    # the walk runs only for the rare body that might be.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _depth_over(data, MAX_JSON_DEPTH):
        raise HTTPError(
            400,
            f"request body is nested more than {MAX_JSON_DEPTH} levels deep (objects and arrays): "
            "flatten the input, or send it as a string or through object storage",
        )
    return data


def _depth_over(value: Any, limit: int) -> bool:
    """Whether `value` nests objects/arrays more than `limit` levels (the top one counts as 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def type_name(value: Any) -> str:
    """A JSON value's type as JSON names it, for error messages."""
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


async def respond(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete JSON answer (`answer`, for parts that do not report the status they answered)."""
    await answer(send, status, payload, headers)


async def answer(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> int:
    """A complete JSON answer; `payload` may already be encoded bytes. A payload that cannot be encoded
    (nested past orjson's 254 levels, say) answers a JSON 500, never the server's plain-text one.
    Returns the status answered (the app's request log records it)."""
    try:
        body = payload if isinstance(payload, bytes) else encode_json(payload)
    except (TypeError, ValueError, RecursionError):  # orjson.JSONEncodeError is a TypeError
        log.exception("the emulator could not encode its answer as JSON")
        status, headers = 500, None
        body = encode_json(
            {"error": "internal emulator error: the answer could not be encoded as JSON; see the server log"}
        )
    # Served by uvicorn through `_serving`: the whole answer in one call, no ASGI messages.
    fast = getattr(getattr(send, "__self__", None), "rpq_answer", None)
    if fast is not None and fast(status, body, headers):
        return status
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


async def respond_empty(send: Send, status: int = 204) -> int:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})
    return status


async def drop(send: Send) -> None:
    """Start an answer and never finish it: the server closes the connection mid-body (the request
    log shows no status)."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
    await send({"type": "http.response.body", "body": b'{"id', "more_body": True})
