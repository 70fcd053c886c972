"""Property-based fuzz of the webhook receiver served by uvicorn: whatever the path, token, headers or
body (signed or not), the answer is never a 5xx and every 4xx says what is wrong in ``error``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_support import SECRET

from runpod_queue._serving import guarded_config
from runpod_queue.webhooks import TOKEN_PARAM, WebhookReceiver, WebhookSigner, asgi_app

SIGNER = WebhookSigner(SECRET)
numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -0.0, 18446744073709551616]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
statuses = st.one_of(
    st.sampled_from(["COMPLETED", "FAILED", "IN_QUEUE", "IN_PROGRESS", "CANCELLED", "TIMED_OUT"]),
    st.text(max_size=10),
    json_values,
)
jobs = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=20), json_values), "status": statuses},
    optional={
        "output": json_values,
        "error": json_values,
        "delayTime": json_values,
        "executionTime": json_values,
        "retries": json_values,
        "workerId": json_values,
    },
)
raw_tails = st.sampled_from([b"", b"NaN", b"Infinity", b"1e400", b"[" * 5000, b"\xff\xfe", b'{"id": 1'])


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    receiver = WebhookReceiver(SIGNER, lambda job: None, max_body=100_000)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(guarded_config(asgi_app(receiver), log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def _token(kind: str, text: str) -> str | None:
    if kind == "valid":
        return SIGNER.token()
    if kind == "expired":
        return SIGNER.token(now=0)
    if kind == "other":
        return WebhookSigner("another-secret-0123456789").token()
    return None if kind == "none" else text


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["POST", "GET", "PUT"]),
    path=st.sampled_from(["/", "/hook", "/healthz", "/a/b"]),
    token_kind=st.sampled_from(["valid", "valid", "expired", "other", "none", "text"]),
    token_text=st.text(max_size=40),
    body=st.one_of(jobs, json_values, st.binary(max_size=300)),
    tail=raw_tails,
    content_type=st.sampled_from(["application/json", "text/plain"]),
)
def test_the_receiver_never_answers_5xx_and_every_4xx_says_why(
    base: str,
    http: httpx.Client,
    method: str,
    path: str,
    token_kind: str,
    token_text: str,
    body: Any,
    tail: bytes,
    content_type: str,
) -> None:
    content = body if isinstance(body, bytes) else httpx.Request("POST", base, json=body).content
    if tail and isinstance(body, bytes):
        content += tail
    token = _token(token_kind, token_text)
    params = {} if token is None else {TOKEN_PARAM: token}
    response = http.request(
        method, base + path, params=params, content=content, headers={"content-type": content_type}
    )
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error, str) and error
