"""Support for the emulator tests: handlers a test can hold mid-run, and a small HTTP wrapper.

Emulator tests drive the emulator over real loopback HTTP with plain httpx, so they check the wire
answers themselves (not the client's reading of them). A module of its own (not conftest), so its name
is unique when several test folders run in one pytest invocation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import echo

KEY = "emu-test-key-5d1c"

# Gates let a test hold a handler mid-run: the handler waits until the test opens its gate.
GATES: dict[str, threading.Event] = {}
STARTED: dict[str, threading.Event] = {}
SEEN: list[Any] = []
CANCELLED: set[str] = set()


def gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


def started(name: str) -> threading.Event:
    return STARTED.setdefault(name, threading.Event())


def held(job: dict[str, Any]) -> Any:
    """Runs until the test opens gate(input.gate) (at most 5 s)."""
    name = job["input"]["gate"]
    SEEN.append(job["input"].get("tag", name))
    started(name).set()
    gate(name).wait(5)
    return {"released": name}


async def async_held(job: dict[str, Any]) -> Any:
    name = job["input"]["gate"]
    started(name).set()
    try:
        while not gate(name).is_set():
            await asyncio.sleep(0.005)
    except asyncio.CancelledError:
        CANCELLED.add(name)
        raise
    return {"released": name}


async def async_echo(job: dict[str, Any]) -> Any:
    await asyncio.sleep(0)
    return {"async": job["input"]}


def tokens(job: dict[str, Any]) -> Any:
    for i in range(job["input"].get("n", 3)):
        if job["input"].get("gate"):
            started(job["input"]["gate"]).set()
            gate(f"{job['input']['gate']}-{i}").wait(5)
        yield f"t{i}"


async def async_tokens(job: dict[str, Any]) -> Any:
    for i in range(job["input"].get("n", 3)):
        await asyncio.sleep(0)
        yield {"token": i}


def fails_with_dict(job: dict[str, Any]) -> Any:
    return {"error": "prompt is required", "partial": 1}


def raises(job: dict[str, Any]) -> Any:
    raise ValueError("model exploded")


def gen_raises(job: dict[str, Any]) -> Any:
    yield "a"
    raise RuntimeError("stream broke")


def blocking(job: dict[str, Any]) -> Any:
    """A sync handler that blocks its thread (never yields to the loop)."""
    started("blocking").set()
    gate("blocking").wait(5)
    return "done"


def ENDPOINTS() -> dict[str, Any]:
    return {
        "echo": echo,
        "held": held,
        "aheld": async_held,
        "aecho": async_echo,
        "tokens": tokens,
        "agg": EndpointSpec(tokens, return_aggregate_stream=True),
        "atokens": EndpointSpec(async_tokens, return_aggregate_stream=True),
        "faildict": fails_with_dict,
        "raises": raises,
        "genraises": gen_raises,
        "blocking": blocking,
        "idle": EndpointSpec(echo, workers=0),
        "idle2": EndpointSpec(echo, workers=0),
        "idle3": EndpointSpec(echo, workers=0),
    }


class Http:
    """A small wrapper: `http.post("echo", "run", json=...)` → response.

    Plain http on loopback: `verify=False` skips loading the CA bundle (~70 ms per client)."""

    def __init__(self, emu: Emulator, key: str | None = KEY) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.emu = emu
        self.client = httpx.Client(base_url=emu.base_url, headers=headers, timeout=10, verify=False)

    def control(self, name: str, method: str = "POST", **kwargs: Any) -> httpx.Response:
        """A request to the emulator's own `/_emulator/<name>` route."""
        return self.client.request(method, f"{self.emu.root_url}/_emulator/{name}", **kwargs)

    def post(self, endpoint: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(f"/{endpoint}/{path}", **kwargs)

    def get(self, endpoint: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(f"/{endpoint}/{path}", **kwargs)

    def run(self, endpoint: str, job_input: dict[str, Any] | None = None, **body: Any) -> str:
        response = self.post(endpoint, "run", json={"input": job_input or {}, **body})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def status(self, endpoint: str, job_id: str) -> dict[str, Any]:
        response = self.get(endpoint, f"status/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(
        self, endpoint: str, job_id: str, *, until: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """Poll status until terminal (or `until`), 5 s at most."""
        deadline = time.monotonic() + 5
        while True:
            body = self.status(endpoint, job_id)
            done = (
                until(body) if until else body["status"] in {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
            )
            if done:
                return body
            assert time.monotonic() < deadline, f"job never reached the expected state: {body}"
            time.sleep(0.005)

    def health(self, endpoint: str) -> dict[str, Any]:
        return dict(self.get(endpoint, "health").json())

    def close(self) -> None:
        self.client.close()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


T = TypeVar("T")


def answered_while_advancing(emu: Emulator, call: Callable[[], T], *, step: float) -> T:
    """Send a request the emulator holds on its virtual clock (from a thread), advancing the clock by
    `step` until it is answered: the test cannot know the moment the hold starts, only that it ends."""
    answers: list[T] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while thread.is_alive():
        assert time.monotonic() < deadline, "the held request was never answered"
        emu.advance(step)
        thread.join(0.01)
    return answers[0]
