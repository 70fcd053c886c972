"""Webhooks people can trust: signed per-submission URLs and a receiver that verifies and deduplicates.

RunPod POSTs a job's status JSON to the `webhook` URL given at submission and signs nothing, so anyone
who learns the URL could forge a "COMPLETED" delivery. `WebhookSigner` makes a fresh URL per submission
carrying a token: an HMAC-SHA256 over a random nonce and an expiry (the job id does not exist yet when the
URL is made). `WebhookReceiver` accepts a delivery only with a valid, unexpired token; the first job id
delivered under a nonce claims it, and a delivery under the same nonce with another job id is refused.

The receiver core is framework-agnostic (`WebhookReceiver.handle` / `ahandle` take the raw query token
and body and return a `Delivery`); `asgi_app` serves it as a ready ASGI app, and
`runpod_queue.webhooks.fastapi` / `runpod_queue.webhooks.flask` are thin adapters.

Answers: 200 accepted (or a repeat of an already accepted (job id, status), acknowledged and not passed
on again); 400 body not JSON / missing fields; 401 no token, bad signature, expired; 403 nonce already
claimed by another job; 413 body too large; 500 the callback raised (so RunPod delivers again); 503 a
body is already being read under this URL, or the receiver's budget of bodies in flight is spent (so
RunPod delivers again later).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import inspect
import json
import math
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from runpod_queue._contract import JobStatus
from runpod_queue._models import Job
from runpod_queue._public import publish as _publish
from runpod_queue._units import Duration, seconds
from runpod_queue.errors import WebhookVerificationError

__all__ = [
    "TOKEN_PARAM",
    "Delivery",
    "MemoryWebhookStore",
    "TokenClaims",
    "WebhookReceiver",
    "WebhookSigner",
    "WebhookVerificationError",
    "asgi_app",
]

TOKEN_PARAM: Final = "rpq_token"  # noqa: S105 - a query parameter name, not a secret
# RunPod's longest ttl is 7 days; a token must outlive the job it reports on, plus retries and delivery.
DEFAULT_EXPIRES_IN: Final = 8 * 86_400.0
DEFAULT_MAX_BODY: Final = 25_000_000
# Bodies being read at once may hold this many bytes together (four RunPod-sized bodies): a leaked URL, or
# a few, cannot make the receiver buffer hundreds of MB. A body of unknown length counts as ``max_body``.
DEFAULT_MAX_INFLIGHT_BYTES: Final = 4 * DEFAULT_MAX_BODY
MIN_SECRET_BYTES: Final = 16  # 128 bits: an HMAC key shorter than that is guessable
_SIGNATURE_BYTES: Final = 32
# A job that reported one of these never reports anything else (FAILED and TIMED_OUT may: /retry runs the
# job again under the same id and webhook URL).
_LAST_WORDS: Final = frozenset({JobStatus.COMPLETED.value, JobStatus.CANCELLED.value})
_SHOWN_STATUS: Final = 40  # a refused status word is echoed up to this many characters


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified webhook token says: its single-use ``nonce`` and when it expires."""

    nonce: str
    expires_at: float


def _lifetime(expires_in: Duration) -> float:
    """A token's lifetime in seconds (a number or a ``timedelta``, as every duration in this package)."""
    value = seconds(
        expires_in, "expires_in", low=None
    )  # a TypeError that says what a duration is, as everywhere
    if not value > 0:
        raise ValueError(
            f"expires_in must be a positive number of seconds or a timedelta, got {expires_in!r}"
        )
    return value


class WebhookSigner:
    """Makes and checks signed webhook URLs. The secret never appears in a URL, repr or message.

    RunPod's webhooks carry no signature of their own, so the URL does: each submission gets a URL with
    a fresh single-use token (``sign``) that the receiver checks (``verify``).

    Args:
        secret: The HMAC key, at least 16 bytes; keep it out of source control.
        expires_in: Seconds (or a ``timedelta``) a signed URL is accepted; default 8 days, longer than
            RunPod keeps any job.

    Raises:
        ValueError: ``secret`` is shorter than 16 bytes.

    Attributes:
        expires_in: Seconds a new token stays valid.
    """

    __slots__ = ("_key", "expires_in")

    def __init__(self, secret: str | bytes, *, expires_in: Duration = 691_200.0) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if not isinstance(key, bytes) or len(key) < MIN_SECRET_BYTES:
            raise ValueError(
                f"webhook secret must be at least {MIN_SECRET_BYTES} bytes; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        self._key = key
        self.expires_in: float = _lifetime(expires_in)

    def __repr__(self) -> str:
        return f"WebhookSigner(secret=***, expires_in={self.expires_in:g})"

    def _signature(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def token(self, *, expires_in: Duration | None = None, now: float | None = None) -> str:
        """A fresh token, ``<nonce>.<expiry unix seconds>.<hmac>``.

        Args:
            expires_in: Seconds this token stays valid; ``None`` takes the signer's ``expires_in``.
            now: The Unix time to count from (tests); ``None`` for the current time.
        """
        nonce = secrets.token_urlsafe(16)
        lifetime = self.expires_in if expires_in is None else _lifetime(expires_in)
        expires_at = int((time.time() if now is None else now) + lifetime)
        payload = f"{nonce}.{expires_at}"
        return f"{payload}.{self._signature(payload)}"

    def sign(self, base_url: str, *, expires_in: Duration | None = None) -> str:
        """A webhook URL to submit a job with: ``base_url`` plus a fresh token in its query string.

        Args:
            base_url: The receiver's public address (``https://...``); its own query parameters are kept.
            expires_in: Seconds the URL stays valid; ``None`` takes the signer's ``expires_in``.

        Returns:
            The signed URL.

        Raises:
            ValueError: ``base_url`` is not an absolute http(s) URL.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook base URL must be an absolute http(s) URL, got {base_url!r}")
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != TOKEN_PARAM]
        query.append((TOKEN_PARAM, self.token(expires_in=expires_in)))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def verify(self, token: str | None, *, now: float | None = None) -> TokenClaims:
        """Check a token's signature and expiry.

        Args:
            token: The ``rpq_token`` query parameter of a delivery (None when it had none).
            now: The Unix time to check against (tests); ``None`` for the current time.

        Returns:
            The token's nonce and expiry.

        Raises:
            WebhookVerificationError: Missing, malformed, forged or expired token (status 401).
        """
        if not token:
            raise WebhookVerificationError(f"missing {TOKEN_PARAM} in the webhook URL")
        pieces = token.split(".")
        if len(pieces) != 3 or not pieces[0] or not pieces[1].isdigit():
            raise WebhookVerificationError("malformed webhook token")
        nonce, expiry, signature = pieces
        expected = self._signature(f"{nonce}.{expiry}")
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise WebhookVerificationError("invalid webhook token signature")
        if int(expiry) < (time.time() if now is None else now):
            raise WebhookVerificationError("webhook token expired")
        return TokenClaims(nonce, float(expiry))

    @staticmethod
    def token_from_url(url: str) -> str | None:
        """The ``rpq_token`` query parameter of a webhook URL, or None.

        Args:
            url: A URL made by ``sign``, or any URL.
        """
        return _token_from_query(urlsplit(url).query)


class MemoryWebhookStore:
    """Nonce claims and accepted (job id, status) pairs, in memory, thread-safe.

    A receiver that must survive restarts loads its history back with `remember` (as `rpq listen` does
    from its output file) or uses a store of its own with the same three methods.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, str] = {}
        self._seen: set[tuple[str, str]] = set()
        self._busy: set[tuple[str, str]] = set()

    def claim(self, nonce: str, job_id: str) -> bool:
        """True if `nonce` is unclaimed or already claimed by `job_id` (then it is now)."""
        with self._lock:
            owner = self._claims.setdefault(nonce, job_id)
            return owner == job_id

    def begin(self, job_id: str, status: str) -> str:
        """'new' (caller now owns it), 'seen' (already accepted) or 'busy' (another delivery is on it)."""
        key = (job_id, status)
        with self._lock:
            if key in self._seen:
                return "seen"
            if key in self._busy:
                return "busy"
            self._busy.add(key)
            return "new"

    def finish(self, job_id: str, status: str, *, accepted: bool) -> None:
        """Release a delivery claimed by ``begin``; an accepted one is remembered as seen.

        Args:
            job_id: The job the delivery reports.
            status: The status it reports.
            accepted: Whether the callback took it; if not, a redelivery may claim it again.
        """
        key = (job_id, status)
        with self._lock:
            self._busy.discard(key)
            if accepted:
                self._seen.add(key)

    def remember(self, nonce: str | None, job_id: str, status: str) -> None:
        """Record a delivery as handled, and its token's nonce as spent for ``job_id``.

        Args:
            nonce: The token's nonce (None for a token without one).
            job_id: The job the delivery reports.
            status: The status it reports.
        """
        with self._lock:
            if nonce:
                self._claims.setdefault(nonce, job_id)
            self._seen.add((job_id, status))


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one POST: the HTTP answer to give and, when accepted, the Job."""

    status_code: int
    reason: str
    job: Job | None = None
    duplicate: bool = False
    body: dict[str, Any] = field(default_factory=dict, repr=False)
    nonce: str | None = None
    size: int = field(default=0, repr=False, compare=False)  # the body's length in bytes

    @property
    def accepted(self) -> bool:
        """The delivery was verified and the callback took it (answered 200)."""
        return self.status_code == 200

    def answer(self) -> bytes:
        """The JSON body to answer the delivery with (``ok``, ``reason``; ``error`` on a refusal)."""
        body: dict[str, Any] = {"ok": self.accepted, "reason": self.reason}
        if self.status_code >= 400:
            body["error"] = self.reason  # as every error answer of the emulator and RunPod carries it
        return json.dumps(body).encode()


Callback = Callable[[Any], Any]


class WebhookReceiver:
    """Verifies deliveries and passes each verified (job id, status) to ``callback`` exactly once.

    Framework-agnostic: ``handle``/``ahandle`` take the token and body and return the ``Delivery`` to
    answer with; ``asgi_app``, ``runpod_queue.webhooks.fastapi`` and ``runpod_queue.webhooks.flask`` wire
    it into a server.

    Args:
        signer: The signer whose URLs the jobs were submitted with.
        callback: Called with the delivered ``Job`` (or the whole ``Delivery`` with ``with_delivery``);
            sync or async. If it raises, the delivery is answered 500 so RunPod delivers it again, and
            it is not marked as seen.
        store: Where spent nonces and accepted deliveries are kept; default in memory. A receiver that
            must survive restarts loads its history back with ``store.remember``.
        max_body: Largest body accepted, in bytes (413 beyond).
        with_delivery: Pass the whole ``Delivery`` (raw body and token nonce too, e.g. to persist them)
            instead of the ``Job``.
        max_inflight_bytes: Bytes that bodies being read at once may announce together (a body without
            a ``Content-Length`` counts as ``max_body``); past it a delivery gets 503 before its body is
            read, and RunPod delivers it again later. One body at a time is read under one URL.

    Raises:
        TypeError: ``callback`` is not callable.
    """

    def __init__(
        self,
        signer: WebhookSigner,
        callback: Callback,
        *,
        store: MemoryWebhookStore | None = None,
        max_body: int = 25_000_000,
        with_delivery: bool = False,
        max_inflight_bytes: int = 100_000_000,
    ) -> None:
        if not callable(callback):
            raise TypeError("callback must be callable: def on_job(job: Job) -> None")
        self.signer: WebhookSigner = signer
        self.callback: Callback = callback
        self.store: MemoryWebhookStore = store or MemoryWebhookStore()
        self.max_body: int = max_body
        self.with_delivery: bool = with_delivery
        self.max_inflight_bytes: int = max_inflight_bytes
        self._inflight_lock = threading.Lock()
        self._inflight_bytes = 0
        self._reading: set[str] = set()  # nonces whose body is being read or handled
        # nonce -> (job id, last status, body size) of the last delivery accepted under it. In memory:
        # after a restart a repeat's body is read again (bounded as any), then judged by the store.
        self._finals: dict[str, tuple[str, str, int]] = {}

    # -- the framework-agnostic core ------------------------------------------------------------

    def refuse_before_body(self, token: str | None, content_length: int | None) -> Delivery | None:
        """The answer to give before reading a byte of the body, or None to go on and read it.

        A stranger must not make a server buffer anything: the token (in the query string), an announced
        size, and whether the URL's job already reported its last status are checked first. Every front
        end (``asgi_app``, the FastAPI and Flask adapters) asks this through ``reading``, then reads at
        most ``max_body + 1`` bytes, and answers a refusal with the connection closed.

        Args:
            token: The delivery URL's ``rpq_token`` query parameter (None when absent).
            content_length: The announced body size, or None when not announced.
        """
        try:
            claims = self.signer.verify(token)
        except WebhookVerificationError as exc:
            return Delivery(exc.status, exc.reason)
        if content_length is not None and content_length > self.max_body:
            return self.too_large()
        final = self._finals.get(claims.nonce)
        if final is not None and (content_length is None or content_length > final[2]):
            # The URL's job reported its last status: what comes later under it is a repeat of that
            # delivery (RunPod repeats one whose answer it lost: the same bytes, read and acknowledged)
            # or a forgery, and one larger than the accepted delivery is refused unread.
            job_id, status, _ = final
            reason = f"this webhook URL already delivered job {job_id} {status}; a URL serves one job"
            return Delivery(403, reason)
        return None

    @contextlib.contextmanager
    def reading(self, token: str | None, content_length: int | None) -> Iterator[Delivery | None]:
        """Admit one delivery's body: yields the answer to give at once, or None to read the body (and
        handle it) inside the ``with`` block.

        ``refuse_before_body``, then two bounds on what is buffered: one body at a time under one URL
        (one nonce), and ``max_inflight_bytes`` over all bodies being read. A refusal is 503 (RunPod
        delivers again later); answer it with the connection closed, as every refusal here.

        Args:
            token: The delivery URL's ``rpq_token`` query parameter (None when absent).
            content_length: The announced body size, or None when not announced.
        """
        refusal = self.refuse_before_body(token, content_length)
        if refusal is not None:
            yield refusal
            return
        nonce = self.signer.verify(token).nonce
        size = self.max_body if content_length is None else content_length
        with self._inflight_lock:
            if nonce in self._reading:
                refusal = Delivery(503, "a delivery under this URL is being read; deliver again later")
            elif self._inflight_bytes + size > self.max_inflight_bytes:
                refusal = Delivery(503, "too many deliveries being read at once; deliver again later")
            else:
                self._reading.add(nonce)
                self._inflight_bytes += size
        if refusal is not None:
            yield refusal
            return
        try:
            yield None
        finally:
            with self._inflight_lock:
                self._reading.discard(nonce)
                self._inflight_bytes -= size

    def too_large(self) -> Delivery:
        """The refusal for a body over ``max_body`` (413)."""
        return Delivery(413, f"body over {self.max_body} bytes")

    def _prepare(self, token: str | None, body: bytes) -> Delivery:
        pending = self._judge(token, body)
        if pending.status_code == 0:
            # Kept for the accepted answer (see _settle): the size a repeat of it will announce.
            pending = replace(pending, size=len(body))
        return pending

    def _judge(self, token: str | None, body: bytes) -> Delivery:
        """Everything before the callback. A Delivery with status 0 means 'call the callback now';
        any other is the answer to give."""
        if len(body) > self.max_body:
            return self.too_large()
        try:
            claims = self.signer.verify(token)
        except WebhookVerificationError as exc:
            return Delivery(exc.status, exc.reason)
        try:
            data = json.loads(body, parse_constant=_not_json, parse_float=_finite)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deep is not a job status either
            return Delivery(400, "body is not JSON")
        try:
            job = Job.from_dict(data)
        except ValueError as exc:
            return Delivery(400, f"not a job status: {exc}")
        if not isinstance(job.status, JobStatus):
            # The client keeps an unknown word (RunPod may add one); a receiver writes it to disk and
            # acts on it, so it takes only what RunPod documents.
            word = job.status_text[:_SHOWN_STATUS]
            known = ", ".join(status.value for status in JobStatus)
            return Delivery(400, f"not a job status: {word!r} is not one of {known}")
        if not self.store.claim(claims.nonce, job.id):
            return Delivery(403, "this webhook URL was issued for another job")
        state = self.store.begin(job.id, job.status_text)
        if state == "seen":
            return Delivery(200, "duplicate delivery acknowledged", job, True, data, claims.nonce)
        if state == "busy":
            return Delivery(503, "the same delivery is being processed; deliver again later")
        return Delivery(0, "accepted", job, False, data, claims.nonce)

    def _settle(self, pending: Delivery, error: Exception | None) -> Delivery:
        assert pending.job is not None
        self.store.finish(pending.job.id, pending.job.status_text, accepted=error is None)
        if error is not None:
            return Delivery(500, f"callback failed: {type(error).__name__}")
        if pending.nonce is not None and pending.job.status_text in _LAST_WORDS:
            self._finals.setdefault(pending.nonce, (pending.job.id, pending.job.status_text, pending.size))
        return replace(pending, status_code=200)

    def _argument(self, pending: Delivery) -> Any:
        return replace(pending, status_code=200) if self.with_delivery else pending.job

    def handle(self, token: str | None, body: bytes) -> Delivery:
        """Verify and dispatch one delivery, for sync servers (an async callback runs to completion).

        Args:
            token: The delivery URL's ``rpq_token`` query parameter (None when absent).
            body: The request body as received.

        Returns:
            The ``Delivery``: answer with its ``status_code`` and ``answer()`` body.
        """
        pending = self._prepare(token, body)
        if pending.status_code:
            return pending
        try:
            result = self.callback(self._argument(pending))
            if inspect.isawaitable(result):
                # asyncio only here and in ahandle: `rpq` imports this module for every command, and a
                # top-level import cost each one ~70 ms CPU
                import asyncio

                asyncio.run(_await(result))
        except Exception as exc:
            return self._settle(pending, exc)
        return self._settle(pending, None)

    async def ahandle(self, token: str | None, body: bytes) -> Delivery:
        """Verify and dispatch one delivery, for async servers (a sync callback runs in a thread).

        Args:
            token: The delivery URL's ``rpq_token`` query parameter (None when absent).
            body: The request body as received.

        Returns:
            The ``Delivery``: answer with its ``status_code`` and ``answer()`` body.
        """
        pending = self._prepare(token, body)
        if pending.status_code:
            return pending
        try:
            if inspect.iscoroutinefunction(self.callback):
                await self.callback(self._argument(pending))
            else:
                import asyncio  # loaded by the running event loop; see handle

                result = await asyncio.to_thread(self.callback, self._argument(pending))
                if inspect.isawaitable(result):
                    await result
        except Exception as exc:
            return self._settle(pending, exc)
        return self._settle(pending, None)


def _not_json(constant: str) -> Any:
    """``NaN`` / ``Infinity`` are Python's extensions, not JSON: RunPod never sends them."""
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    """A number too large for a float (``1e400``) would become ``inf``, which strict JSON cannot hold."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _token_from_query(raw_query: bytes | str) -> str | None:
    text = raw_query.decode("latin-1") if isinstance(raw_query, bytes) else raw_query
    for key, value in parse_qsl(text):
        if key == TOKEN_PARAM:
            return value
    return None


AnswerHook = Callable[[Delivery, str | None], None]


def asgi_app(
    receiver: WebhookReceiver, *, paths: Iterable[str] | None = None, on_answer: AnswerHook | None = None
) -> Any:
    """A ready ASGI app for a receiver: POST deliveries to it, GET ``/healthz`` answers ok.

    Bodies are read in chunks up to ``receiver.max_body``, and the token is checked before the body is
    read, so a stranger cannot make the app buffer an upload.

    Args:
        receiver: The receiver that verifies and dispatches each delivery.
        paths: The paths deliveries may be posted to; ``None`` accepts any.
        on_answer: Called as ``on_answer(delivery, client_host)`` after each answer, refused or
            accepted (e.g. to log it); an exception it raises is ignored, the answer being sent.

    Returns:
        The ASGI application (serve it with uvicorn or any ASGI server).
    """
    allowed = None if paths is None else set(paths)

    async def answer(send: Any, scope: dict[str, Any], delivery: Delivery, *, close: bool = False) -> None:
        await _send(send, delivery.status_code, delivery.answer(), close=close)
        if on_answer is not None:
            client = scope.get("client")
            with contextlib.suppress(Exception):
                on_answer(delivery, None if not client else str(client[0]))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/healthz":
            return await _send(send, 200, b'{"ok": true}')
        if allowed is not None and scope["path"] not in allowed:
            return await answer(send, scope, Delivery(404, "no webhook here"))
        if scope["method"] != "POST":
            return await answer(send, scope, Delivery(405, "webhooks are POSTed"))
        # A stranger must not make us buffer anything: the token (in the query string) is checked and an
        # announced size over the limit refused before a byte of the body is read; both answers close the
        # connection so the rest of the upload is never read either.
        token = _token_from_query(scope.get("query_string", b""))
        with receiver.reading(token, _content_length(scope)) as refusal:
            if refusal is not None:
                return await answer(send, scope, refusal, close=True)
            too_large = receiver.too_large()
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > receiver.max_body:
                    return await answer(send, scope, too_large, close=True)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            delivery = await receiver.ahandle(token, b"".join(chunks))
        await answer(send, scope, delivery)

    return app


def _content_length(scope: dict[str, Any]) -> int | None:
    """The announced body size (None when absent or unreadable: the read itself enforces the limit)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _send(send: Any, status: int, body: bytes, *, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_publish(globals())
