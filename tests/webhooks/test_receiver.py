"""The receiver with the emulator delivering real webhooks on loopback — the same tests for the ready
ASGI app, the FastAPI adapter and the Flask adapter."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from runpod_queue import Job
from runpod_queue.emulator import Emulator, EndpointSpec
from runpod_queue.webhooks import TOKEN_PARAM, WebhookReceiver, WebhookSigner, asgi_app

SECRET = "wh-secret-7f3a9c1e5b2d4f60"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


class Served:
    """A receiver served over HTTP by one of the three front ends; records what reached the callback."""

    def __init__(self, kind: str) -> None:
        self.calls: list[Job] = []
        self.fail_next = 0
        self.signer = WebhookSigner(SECRET)
        self.receiver = WebhookReceiver(self.signer, self._callback)
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/hook"
        if kind == "flask":
            from flask import Flask
            from werkzeug.serving import make_server

            from runpod_queue.webhooks.flask import blueprint

            flask_app = Flask("hooks")
            flask_app.register_blueprint(blueprint(self.receiver, "/hook"))
            self._wsgi = make_server("127.0.0.1", self.port, flask_app, threaded=True)
            self._thread = threading.Thread(target=self._wsgi.serve_forever, daemon=True)
            self._stop: Callable[[], None] = self._wsgi.shutdown
        else:
            if kind == "fastapi":
                from fastapi import FastAPI

                from runpod_queue.webhooks.fastapi import router

                app: Any = FastAPI()
                app.include_router(router(self.receiver, "/hook"))
            else:
                app = asgi_app(self.receiver, paths=["/hook"])
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="on")
            server = uvicorn.Server(config)
            self._thread = threading.Thread(target=server.run, daemon=True)

            def stop() -> None:
                server.should_exit = True

            self._stop = stop
        self._thread.start()
        eventually(self._up)

    def _up(self) -> bool:
        try:
            httpx.post(self.base, content=b"{}", timeout=1)
            return True
        except httpx.HTTPError:
            return False

    def _callback(self, job: Job) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("downstream database is down")
        self.calls.append(job)

    def close(self) -> None:
        self._stop()
        self._thread.join(5)


@pytest.fixture(params=["asgi", "fastapi", "flask"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    s = Served(request.param)
    yield s
    s.close()


def failing(job: dict[str, Any]) -> Any:
    return {"error": "no good"}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    endpoints = {"echo": lambda job: job["input"], "fail": failing, "idle": EndpointSpec(None, workers=0)}
    with Emulator(endpoints, time_scale=0.001) as emulator:  # webhook retry gap 10 s → 10 ms
        yield emulator


def run(emu: Emulator, endpoint: str, webhook: str, job_input: dict[str, Any] | None = None) -> str:
    answer = httpx.post(f"{emu.base_url}/{endpoint}/run", json={"input": job_input or {}, "webhook": webhook})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def attempts(emu: Emulator, job_id: str) -> list[int | None]:
    return [a.status_code for a in emu.webhook_attempts if a.job_id == job_id]


def test_a_verified_delivery_reaches_the_callback_once_although_delivered_again(
    served: Served, emu: Emulator
) -> None:
    job_id = run(emu, "fail", served.signer.sign(served.base))
    eventually(lambda: attempts(emu, job_id) == [200])
    # FAILED → retry → FAILED again: the emulator delivers the same (job id, status) a second time.
    assert httpx.post(f"{emu.base_url}/fail/retry/{job_id}").status_code == 200
    eventually(lambda: attempts(emu, job_id) == [200, 200])
    assert [(j.id, j.status.value) for j in served.calls] == [(job_id, "FAILED")]
    assert served.calls[0].error == "no good"


def test_forged_deliveries_are_refused_and_never_reach_the_callback(served: Served, emu: Emulator) -> None:
    good = served.signer.sign(served.base)
    token = good.split(f"{TOKEN_PARAM}=")[1]
    forged = {
        "no token": served.base,
        "wrong token": f"{served.base}?{TOKEN_PARAM}={token[:-3]}xyz",
        "expired": f"{served.base}?{TOKEN_PARAM}={served.signer.token(expires_in=1, now=time.time() - 60)}",
        "other secret": WebhookSigner("attacker-secret-000000").sign(served.base),
    }
    for url in forged.values():
        job_id = run(emu, "echo", url)
        eventually(lambda job_id=job_id: len(attempts(emu, job_id)) == 3)  # retried, refused every time
        assert set(attempts(emu, job_id)) == {401}
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
    not_json = httpx.post(url, content=b"<html>")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["reason"]
    missing = httpx.post(url, json={"status": "COMPLETED"})
    assert missing.status_code == 400 and "id" in missing.json()["reason"]
    served.receiver.max_body = 100
    big = httpx.post(url, content=b"{" + b" " * 200 + b"}")
    assert big.status_code == 413
    assert served.calls == []
