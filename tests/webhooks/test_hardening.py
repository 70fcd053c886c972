"""The receiver faces the internet: a stranger cannot make it buffer a body, hold a connection open
with slow headers or a slow body, or send it headers of any size. Raw sockets on loopback: the point is
what happens before (or instead of) a complete request."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from webhook_support import SECRET

from runpod_queue._serving import GuardedHttpTools, guarded_config
from runpod_queue.webhooks import WebhookReceiver, WebhookSigner, asgi_app


class _Quick(GuardedHttpTools):
    header_timeout = 0.3
    body_timeout = 0.3
    max_header_bytes = 4096


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    received: list[object] = []
    receiver = WebhookReceiver(WebhookSigner(SECRET), received.append, max_body=1000)
    sock = socket.create_server(("127.0.0.1", 0))
    config = guarded_config(asgi_app(receiver), log_level="error", lifespan="off")
    config.http = _Quick
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    server.should_exit = True
    thread.join(5)


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes (the 5 s timeout only stops a stuck test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_tokenless_upload_is_refused_before_its_body_is_read(port: int) -> None:
    # Only the headers are sent: an answer proves the body was never waited for (nor buffered).
    answer = _exchange(port, b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 25000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"missing rpq_token" in answer


def test_an_announced_body_over_the_limit_is_refused_before_it_is_read(port: int) -> None:
    token = WebhookSigner(SECRET).token()
    head = f"POST /hook?rpq_token={token} HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n"
    answer = _exchange(port, head.encode())
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_slow_headers_and_slow_bodies_are_cut_off(port: int) -> None:
    assert _exchange(port, b"POST /hook HTTP/1.1\r\nHost: x\r\n") == b""  # headers never end
    token = WebhookSigner(SECRET).token()
    head = f"POST /hook?rpq_token={token} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{"
    assert _exchange(port, head.encode()) == b""  # 99 bytes never come


def test_headers_over_the_limit_get_431(port: int) -> None:
    answer = _exchange(port, b"POST /hook HTTP/1.1\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"error"' in answer


class _Loris(GuardedHttpTools):
    header_timeout = 30.0  # never reached here: what these tests see is the first-byte deadline and eviction
    first_byte_timeout = 0.3
    max_waiting_per_client = 8
    evictable_after = 0.0  # any waiting connection may make room (a real one must have waited 1 s)


@pytest.fixture
def loris_port() -> Iterator[int]:
    receiver = WebhookReceiver(WebhookSigner(SECRET), lambda job: None)
    sock = socket.create_server(("127.0.0.1", 0))
    config = guarded_config(asgi_app(receiver), limit_concurrency=4, log_level="error", lifespan="off")
    config.http = _Loris
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    server.should_exit = True
    thread.join(5)


def _half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)  # the timeout: a stuck test
    sock.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # headers never end
    return sock


def test_half_open_connections_do_not_take_the_slots_of_signed_deliveries(loris_port: int) -> None:
    # Twice the concurrency limit in connections that never finish their headers (a slowloris): they
    # are not counted toward it, so a signed delivery arriving meanwhile is answered, not 503.
    held = [_half_open(loris_port) for _ in range(8)]
    try:
        body = b'{"id": "j1", "status": "COMPLETED"}'
        head = f"POST /hook?rpq_token={WebhookSigner(SECRET).token()} HTTP/1.1\r\nHost: x\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        answer = _exchange_one(loris_port, head.encode() + body)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:40]
    finally:
        for sock in held:
            sock.close()


def test_one_client_keeps_a_bounded_number_of_half_open_connections_its_oldest_closed_first(
    loris_port: int,
) -> None:
    held = [_half_open(loris_port) for _ in range(9)]  # one over max_waiting_per_client
    try:
        assert held[0].recv(1) == b""  # the oldest is closed by the server
    finally:
        for sock in held:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed_at_the_first_byte_deadline(loris_port: int) -> None:
    with socket.create_connection(("127.0.0.1", loris_port), timeout=5) as sock:
        assert sock.recv(1) == b""  # long before the 30 s header deadline


def _exchange_one(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return sock.recv(4096)
