"""The receiver with the emulator delivering real webhooks on loopback — the same tests for the ready
ASGI app, the FastAPI adapter and the Flask adapter."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from webhook_support import HTTP, SECRET, attempts, eventually, run

from runpod_queue import Job
from runpod_queue.emulator import Emulator
from runpod_queue.webhooks import TOKEN_PARAM, WebhookReceiver, WebhookSigner, asgi_app
from shared_support import FAIL_MESSAGE


class Served:
    """A receiver served over HTTP by one of the three front ends on a port the OS picked (bound before
    serving, so it is known and no other process can take it); records what reached the callback."""

    def __init__(self, kind: str) -> None:
        self.calls: list[Job] = []
        self.fail_next = 0
        self.signer = WebhookSigner(SECRET)
        self.receiver = WebhookReceiver(self.signer, self._callback)
        self._stop: Callable[[], None]
        if kind == "flask":
            from flask import Flask
            from werkzeug.serving import make_server

            from runpod_queue.webhooks.flask import blueprint

            flask_app = Flask("hooks")
            flask_app.register_blueprint(blueprint(self.receiver, "/hook"))
            wsgi = make_server("127.0.0.1", 0, flask_app, threaded=True)
            self.port = wsgi.server_port
            self._thread = threading.Thread(target=wsgi.serve_forever, args=(0.01,), daemon=True)
            self._stop = wsgi.shutdown
        else:
            if kind == "fastapi":
                from fastapi import FastAPI

                from runpod_queue.webhooks.fastapi import router

                app: object = FastAPI()
                app.include_router(router(self.receiver, "/hook"))  # type: ignore[attr-defined]
            else:
                app = asgi_app(self.receiver, paths=["/hook"])
            sock = socket.create_server(("127.0.0.1", 0))  # listening now: requests wait in its backlog
            self.port = sock.getsockname()[1]
            server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
            self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)

            def stop() -> None:
                server.should_exit = True

            self._stop = stop
        self.base = f"http://127.0.0.1:{self.port}/hook"
        self._thread.start()

    def _callback(self, job: Job) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("downstream database is down")
        self.calls.append(job)

    def close(self) -> None:
        self._stop()
        self._thread.join(5)


@pytest.fixture(scope="module", params=["asgi", "fastapi", "flask"])
def server(request: pytest.FixtureRequest) -> Iterator[Served]:
    """One server per front end for the whole module: starting one per test cost more than the tests."""
    s = Served(request.param)
    yield s
    s.close()


@pytest.fixture
def served(server: Served) -> Iterator[Served]:
    """The module's server, as new to each test: no calls recorded, no failure pending, default limits."""
    max_body = server.receiver.max_body
    server.calls.clear()
    server.fail_next = 0
    yield server
    server.receiver.max_body = max_body


def test_a_verified_delivery_reaches_the_callback_once_although_delivered_again(
    served: Served, emu: Emulator
) -> None:
    job_id = run(emu, "fail", served.signer.sign(served.base))
    eventually(lambda: attempts(emu, job_id) == [200])
    # FAILED → retry → FAILED again: the emulator delivers the same (job id, status) a second time.
    assert HTTP.post(f"{emu.base_url}/fail/retry/{job_id}").status_code == 200
    eventually(lambda: attempts(emu, job_id) == [200, 200])
    assert [(j.id, j.status.value) for j in served.calls] == [(job_id, "FAILED")]
    assert served.calls[0].error == FAIL_MESSAGE


def test_forged_deliveries_are_refused_and_never_reach_the_callback(served: Served, emu: Emulator) -> None:
    good = served.signer.sign(served.base)
    token = good.split(f"{TOKEN_PARAM}=")[1]
    forged = {
        "no token": served.base,
        "wrong token": f"{served.base}?{TOKEN_PARAM}={token[:-3]}xyz",
        "expired": f"{served.base}?{TOKEN_PARAM}={served.signer.token(expires_in=1, now=time.time() - 60)}",
        "other secret": WebhookSigner("attacker-secret-000000").sign(served.base),
    }
    jobs = {name: run(emu, "echo", url) for name, url in forged.items()}
    eventually(lambda: all(len(attempts(emu, job_id)) == 3 for job_id in jobs.values()))  # retried twice
    assert {name: attempts(emu, job_id) for name, job_id in jobs.items()} == {
        name: [401, 401, 401] for name in forged
    }
    # A signed URL claimed by one job cannot carry another job's delivery.
    first = run(emu, "echo", good, {"n": 1})
    eventually(lambda: attempts(emu, first) == [200])
    second = run(emu, "echo", good, {"n": 2})
    eventually(lambda: len(attempts(emu, second)) == 3)
    assert set(attempts(emu, second)) == {403}
    assert [j.id for j in served.calls] == [first]


def test_a_callback_that_fails_once_is_redelivered_then_succeeds(served: Served, emu: Emulator) -> None:
    served.fail_next = 1
    job_id = run(emu, "echo", served.signer.sign(served.base), {"k": "v"})
    eventually(lambda: attempts(emu, job_id) == [500, 200])
    assert [(j.id, j.output) for j in served.calls] == [(job_id, {"k": "v"})]


def test_bad_bodies_get_a_4xx_with_a_reason(served: Served) -> None:
    url = served.signer.sign(served.base)
    not_json = HTTP.post(url, content=b"<html>")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["reason"]
    missing = HTTP.post(url, json={"status": "COMPLETED"})
    assert missing.status_code == 400 and "id" in missing.json()["reason"]
    served.receiver.max_body = 100
    big = HTTP.post(url, content=b"{" + b" " * 200 + b"}")
    assert big.status_code == 413
    assert served.calls == []


def test_a_tokenless_upload_is_refused_before_its_body_is_read(served: Served) -> None:
    """Only the headers of a 25 MB upload are sent: an answer proves no front end waited for the body."""
    head = "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 25000000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:  # the timeout: a stuck test
        sock.sendall(head.encode())
        answer = b""
        while b"missing rpq_token" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 ") and b"missing rpq_token" in answer
    assert served.calls == []
