"""The emulator against slow or oversized requests: headers past 64 KB get 431, headers or a body that
never finish are cut off, and it keeps answering others meanwhile. Raw sockets on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from emulator_support import KEY

from runpod_queue._serving import GuardedHttpTools
from runpod_queue.emulator import Emulator
from shared_support import echo


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(GuardedHttpTools, "header_timeout", 0.3)  # read on each connection
    monkeypatch.setattr(GuardedHttpTools, "body_timeout", 0.3)
    with Emulator({"echo": echo}, api_key=KEY) as emu:
        yield emu.port


def _until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_headers_over_64_kb_get_431(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /v2/echo/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"error"' in answer


def test_half_sent_requests_are_cut_off_while_others_are_answered(port: int) -> None:
    half_sent = []
    try:
        for n in range(100):  # bounded: enough to show they do not pile up, small for a shared machine
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if n % 2:
                sock.sendall(b"POST /v2/echo/run HTTP/1.1\r\nHost: x\r\n")  # headers never end
            else:
                head = f"POST /v2/echo/run HTTP/1.1\r\nAuthorization: {KEY}\r\nContent-Length: 100\r\n\r\n{{"
                sock.sendall(head.encode())  # the body never ends
            half_sent.append(sock)
        health = httpx.get(f"http://127.0.0.1:{port}/v2/echo/health", headers={"Authorization": KEY})
        assert health.status_code == 200
        for sock in half_sent:
            assert _until_closed(sock) == b""  # closed by the server, nothing answered
    finally:
        for sock in half_sent:
            sock.close()
