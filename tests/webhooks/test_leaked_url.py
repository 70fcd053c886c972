"""What one leaked (validly signed) webhook URL lets a stranger do: not buffer uploads at will, not run
many bodies at once, not write a made-up status. Raw sockets on loopback, so what is answered before the
body is sent is seen as such."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from webhook_support import SECRET

from runpod_queue._serving import guarded_config
from runpod_queue.webhooks import WebhookReceiver, WebhookSigner, asgi_app

SIGNER = WebhookSigner(SECRET)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, WebhookReceiver, list[object]]]:
    received: list[object] = []
    receiver = WebhookReceiver(SIGNER, received.append, max_body=1000, max_inflight_bytes=1500)
    sock = socket.create_server(("127.0.0.1", 0))
    config = guarded_config(asgi_app(receiver), log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1]), receiver, received
    server.should_exit = True
    thread.join(5)


def _head(token: str, size: int) -> bytes:
    return f"POST /hook?rpq_token={token} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()


def _status_line(sock: socket.socket) -> bytes:
    return sock.recv(4096).split(b"\r\n", 1)[0]


def _deliver(port: int, token: str, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # the timeout: a stuck test
        sock.sendall(_head(token, len(body)) + body)
        return _status_line(sock)


def test_a_url_whose_job_reported_completed_refuses_a_larger_upload_before_its_body(
    served: tuple[int, WebhookReceiver, list[object]],
) -> None:
    port, _, received = served
    token = SIGNER.token()
    body = json.dumps({"id": "paid-job", "status": "COMPLETED", "output": "ok"}).encode()
    assert _deliver(port, token, body).startswith(b"HTTP/1.1 200")
    # Only the headers of a bigger upload are sent: an answer proves its body was never waited for.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_head(token, 1000))
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403") and b"already delivered job paid-job COMPLETED" in answer
    # RunPod repeating the delivery whose answer it lost (the same bytes) is still acknowledged.
    assert _deliver(port, token, body).startswith(b"HTTP/1.1 200")
    assert len(received) == 1


def test_one_body_at_a_time_under_one_url_and_a_budget_over_all(
    served: tuple[int, WebhookReceiver, list[object]],
) -> None:
    port, _, received = served
    before = len(received)
    token, other = SIGNER.token(), SIGNER.token()
    body = json.dumps({"id": "slow-job", "status": "COMPLETED", "pad": "x" * 900}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        slow.sendall(_head(token, len(body)) + body[:10])  # a body being read under `token`
        with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
            second.sendall(_head(token, len(body)))
            assert b"under this URL is being read" in second.recv(4096)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:  # another URL, over budget
            third.sendall(_head(other, 600))
            assert b"too many deliveries being read" in third.recv(4096)
        slow.sendall(body[10:])
        assert _status_line(slow).startswith(b"HTTP/1.1 200")
    # Both slots are free again once the body is handled.
    other_body = json.dumps({"id": "other-job", "status": "COMPLETED"}).encode()
    assert _deliver(port, other, other_body).startswith(b"HTTP/1.1 200")
    assert len(received) == before + 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_status_word_that_is_not_a_job_status_is_refused(mode: str) -> None:
    received: list[object] = []
    receiver = WebhookReceiver(SIGNER, received.append)
    token = SIGNER.token()
    good = json.dumps({"id": "j1", "status": "FAILED", "error": "boom"}).encode()
    pwned = json.dumps({"id": "j1", "status": "PWNED"}).encode()

    def handle(body: bytes) -> object:
        if mode == "sync":
            return receiver.handle(token, body)
        return asyncio.run(receiver.ahandle(token, body))

    first = handle(good)
    refused = handle(pwned)
    assert getattr(first, "status_code", None) == 200
    assert getattr(refused, "status_code", None) == 400
    assert "'PWNED' is not one of IN_QUEUE, IN_PROGRESS" in str(getattr(refused, "reason", ""))
    assert len(received) == 1
