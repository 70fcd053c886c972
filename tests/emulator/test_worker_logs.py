"""REST v2's worker logs route in the emulator: `GET /serverless/{id}/workers/{workerId}/logs` as server-sent
events `{ts, source, line}` (runpod/docs api-reference-v2/openapi.json, operation getWorkerLogs), fed by
in-process handlers' prints and logging records per worker, with the management routes' auth and errors."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emulator_support import KEY

from runpod_queue.emulator import Emulator, EndpointSpec
from runpod_queue.emulator._worker_logs import LINES_PER_WORKER

log = logging.getLogger("tests.worker_logs.handler")
GATE = threading.Event()


def talker(job: dict[str, Any]) -> Any:
    print(f"printing {job['input']['n']}")
    sys.stderr.write("to stderr ")
    sys.stderr.write("in two writes\n")
    log.warning("warned %s", job["input"]["n"])
    return job["input"]


async def async_talker(job: dict[str, Any]) -> Any:
    await asyncio.sleep(0)
    print(f"async {job['input']['n']}")
    return job["input"]


def blocker(job: dict[str, Any]) -> Any:
    print("waiting for the gate")
    GATE.wait(10)
    return {}


def many(job: dict[str, Any]) -> Any:
    for i in range(LINES_PER_WORKER + 50):
        print(f"line {i}")
    return {}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    endpoints = {
        "talk": EndpointSpec(talker, workers=1),
        "atalk": EndpointSpec(async_talker, workers=1),
        "block": EndpointSpec(blocker, workers=1),
        "many": EndpointSpec(many, workers=1),
        "scaled": EndpointSpec(talker, workers_max=1, cold_start=5, idle_timeout=10),
    }
    with Emulator(endpoints, api_key=KEY, clock="virtual") as emu:
        yield emu
    GATE.set()


@pytest.fixture
def api(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=emu.management_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as http:
        yield http


def _run(emu: Emulator, endpoint: str, n: int) -> dict[str, Any]:
    answer = httpx.post(
        f"{emu.base_url}/{endpoint}/runsync", json={"input": {"n": n}}, headers={"Authorization": KEY}
    )
    body: dict[str, Any] = answer.json()
    assert body["status"] == "COMPLETED", body
    return body


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            events.append((fields["id"], json.loads(fields["data"])))
    return events


def _lines(api: httpx.Client, endpoint: str, worker: str, **params: Any) -> list[dict[str, Any]]:
    answer = api.get(f"/serverless/{endpoint}/workers/{worker}/logs", params={"follow": "false", **params})
    assert answer.status_code == 200, answer.text
    return [data for _, data in _events(answer.text)]


def test_a_handlers_prints_stderr_and_logging_stream_as_sse(emu: Emulator, api: httpx.Client) -> None:
    job = _run(emu, "talk", 7)
    worker = job["workerId"]
    answer = api.get(f"/serverless/talk/workers/{worker}/logs", params={"follow": "false"})
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache" and "ratelimit" in answer.headers
    events = _events(answer.text)
    container = [data["line"] for _, data in events if data["source"] == "container"]
    assert container[:2] == ["printing 7", "to stderr in two writes"]
    # The record as the first handler on its way formats it (here pytest's log capture).
    assert container[2].startswith("WARNING") and container[2].endswith("warned 7") and len(container) == 3
    assert all(data["jobId"] == job["id"] for _, data in events if data["source"] == "container")
    system = [data["line"] for _, data in events if data["source"] == "system"]
    assert system == [
        "worker started: ready (no cold start)",
        f"job {job['id']} started",
        f"job {job['id']} ended: COMPLETED",
    ]
    # The id is the event's ts and a sequence, as the OpenAPI's example ("2026-06-01T12:05:04Z/000…042").
    event_id, data = events[0]
    stamp, _, seq = event_id.partition("/")
    assert stamp == data["ts"] and data["ts"].endswith("Z") and len(seq) == 12 and seq.isdigit()


def test_an_async_handlers_prints_are_captured(emu: Emulator, api: httpx.Client) -> None:
    job = _run(emu, "atalk", 3)
    assert [line["line"] for line in _lines(api, "atalk", job["workerId"], source="container")] == ["async 3"]


def test_output_outside_a_run_is_not_taken(emu: Emulator, api: httpx.Client) -> None:
    job = _run(emu, "talk", 1)
    print("the test's own print")
    log.warning("the test's own warning")
    lines = [line["line"] for line in _lines(api, "talk", job["workerId"], source="container")]
    assert not any("the test's own" in line for line in lines)


def test_source_tail_and_since_select_lines(emu: Emulator, api: httpx.Client) -> None:
    first = _run(emu, "talk", 1)
    worker = first["workerId"]
    emu.advance(60)
    _run(emu, "talk", 2)
    assert all(line["source"] == "system" for line in _lines(api, "talk", worker, source="system"))
    assert [line["line"] for line in _lines(api, "talk", worker, tail=1)] == [
        line["line"] for line in _lines(api, "talk", worker)
    ][-1:]
    assert _lines(api, "talk", worker, tail=0) == []
    everything = _lines(api, "talk", worker)
    later = everything[-1]["ts"]
    assert [line["line"] for line in _lines(api, "talk", worker, since=later)] == [
        line["line"] for line in everything if line["ts"] >= later
    ]
    assert any("2" in line["line"] for line in _lines(api, "talk", worker, since=later))


def test_last_event_id_resumes_after_that_event(emu: Emulator, api: httpx.Client) -> None:
    job = _run(emu, "talk", 1)
    answer = api.get(f"/serverless/talk/workers/{job['workerId']}/logs", params={"follow": "false"})
    events = _events(answer.text)
    resumed = api.get(
        f"/serverless/talk/workers/{job['workerId']}/logs",
        params={"follow": "false"},
        headers={"Last-Event-ID": events[1][0]},
    )
    assert [data for _, data in _events(resumed.text)] == [data for _, data in events[2:]]


def test_the_buffer_keeps_the_last_lines_per_worker(emu: Emulator, api: httpx.Client) -> None:
    job = _run(emu, "many", 0)
    lines = [line["line"] for line in _lines(api, "many", job["workerId"], tail=5000)]
    assert len(lines) == LINES_PER_WORKER
    assert lines[-1] == f"job {job['id']} ended: COMPLETED" and "line 0" not in lines


def _submit(emu: Emulator, endpoint: str, n: int) -> str:
    answer = httpx.post(
        f"{emu.base_url}/{endpoint}/run", json={"input": {"n": n}}, headers={"Authorization": KEY}
    )
    job_id: str = answer.json()["id"]
    return job_id


def _finished(emu: Emulator, endpoint: str, job_id: str) -> dict[str, Any]:
    for _ in range(200):  # the handler runs on a lane thread: its end is posted to the loop
        body: dict[str, Any] = httpx.get(
            f"{emu.base_url}/{endpoint}/status/{job_id}", headers={"Authorization": KEY}
        ).json()
        if body["status"] == "COMPLETED":
            return body
        threading.Event().wait(0.02)
    raise AssertionError(f"job {job_id} did not complete: {body}")


def _follower(
    emu: Emulator, endpoint: str, worker: str, into: queue.Queue[str], stop: threading.Event | None = None
) -> threading.Thread:
    def main() -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        url = f"{emu.management_url}/serverless/{endpoint}/workers/{worker}/logs"
        with httpx.stream("GET", url, headers=headers, timeout=10) as answer:
            for raw in answer.iter_lines():
                if raw.startswith("data: "):
                    into.put(json.loads(raw[6:])["line"])
                elif raw == ": end of backfill":
                    into.put("<backfilled>")
                if stop is not None and stop.is_set():
                    break  # leaving the iteration closes the connection
        into.put("<end>")

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread


def _until(into: queue.Queue[str], last: str) -> list[str]:
    seen: list[str] = []
    while not seen or seen[-1] != last:
        seen.append(into.get(timeout=10))
    return seen


def test_follow_streams_new_lines_and_ends_when_the_worker_stops(emu: Emulator) -> None:
    first = _submit(emu, "scaled", 1)  # a fleet of 0..1: the job starts a worker, cold for 5 s
    emu.advance(5)
    worker = _finished(emu, "scaled", first)["workerId"]
    lines: queue.Queue[str] = queue.Queue()
    thread = _follower(emu, "scaled", worker, lines)
    backfill = _until(lines, "<backfilled>")
    assert backfill[:2] == ["worker INITIALIZING: cold start 5 s", "worker ready"]
    second = _submit(emu, "scaled", 2)
    live = _until(lines, f"job {second} ended: COMPLETED")
    assert live[:2] == [f"job {second} started", "printing 2"]
    emu.advance(10)  # its idle timeout: the worker stops, and the stream ends after saying so
    assert _until(lines, "<end>") == ["worker stopped: idle timeout", "<end>"]
    thread.join(10)
    assert not thread.is_alive()


def test_a_follower_that_goes_away_is_let_go(emu: Emulator) -> None:
    worker = _run(emu, "talk", 1)["workerId"]
    lines: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    thread = _follower(emu, "talk", worker, lines, stop)
    _until(lines, "<backfilled>")
    buffer = emu.core.logs._buffers[worker]
    assert buffer.waiters  # following
    stop.set()
    _run(emu, "talk", 2)  # a line for the follower to read before it leaves
    _until(lines, "<end>")
    thread.join(10)
    for _ in range(250):  # the server notices the closed connection on its loop
        if not buffer.waiters:
            break
        threading.Event().wait(0.02)
    assert not buffer.waiters


def test_stopping_the_emulator_ends_a_follow(api: httpx.Client) -> None:
    endpoints = {"talk": EndpointSpec(talker, workers=1)}
    with Emulator(endpoints, api_key=KEY, clock="virtual") as other:
        worker = _run(other, "talk", 1)["workerId"]
        lines: queue.Queue[str] = queue.Queue()
        thread = _follower(other, "talk", worker, lines)
        _until(lines, "<backfilled>")
    assert _until(lines, "<end>")[-1] == "<end>"
    thread.join(10)
    assert not thread.is_alive()


def test_unknown_worker_and_endpoint_are_problem_404s(emu: Emulator, api: httpx.Client) -> None:
    answer = api.get("/serverless/talk/workers/nope/logs")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert "worker 'nope' not found on endpoint 'talk'" in answer.json()["detail"]
    assert api.get("/serverless/missing/workers/nope/logs").status_code == 404
    # A worker of another endpoint is not this endpoint's.
    other = _run(emu, "atalk", 1)["workerId"]
    assert api.get(f"/serverless/talk/workers/{other}/logs").status_code == 404


def test_bad_parameters_are_problem_400s(emu: Emulator, api: httpx.Client) -> None:
    worker = _run(emu, "talk", 1)["workerId"]
    for params in (
        {"tail": "-1"},
        {"tail": "5001"},
        {"source": "kernel"},
        {"since": "yesterday"},
        {"x": "1"},
    ):
        answer = api.get(f"/serverless/talk/workers/{worker}/logs", params=params)
        assert answer.status_code == 400, params
        assert answer.headers["content-type"] == "application/problem+json"


def test_logs_need_the_api_key(emu: Emulator) -> None:
    worker = _run(emu, "talk", 1)["workerId"]
    answer = httpx.get(f"{emu.management_url}/serverless/talk/workers/{worker}/logs")
    assert answer.status_code == 401 and answer.headers["content-type"] == "application/problem+json"
    answer = httpx.get(
        f"{emu.management_url}/serverless/talk/workers/{worker}/logs", headers={"Authorization": "Bearer x"}
    )
    assert answer.status_code == 401


_OWN_LOGGING = """
import logging, httpx
from runpod_queue.emulator import Emulator, EndpointSpec

def handler(job):
    logging.getLogger("mine").warning("unconfigured warning")
    return {}

root = logging.getLogger()
with Emulator({"ep": EndpointSpec(handler, workers=1)}, api_key="k", clock="virtual") as emu:
    assert root.handlers == [], root.handlers  # nothing of ours on the root logger
    job = httpx.post(emu.base_url + "/ep/runsync", json={"input": {}}, headers={"Authorization": "k"}).json()
    logs = httpx.get(
        f"{emu.management_url}/serverless/ep/workers/{job['workerId']}/logs",
        params={"follow": "false", "source": "container"}, headers={"Authorization": "Bearer k"},
    ).text
    assert '"line":"unconfigured warning"' in logs, logs  # Python's last resort printed it: taken once
    assert logs.count("unconfigured warning") == 1, logs
    logging.basicConfig(level=logging.INFO, format="configured %(message)s")
    assert len(root.handlers) == 1  # basicConfig still works while an emulator runs
print("ok")
"""


def test_the_users_logging_setup_is_left_alone(tmp_path: Any) -> None:
    import subprocess

    script = tmp_path / "own_logging.py"
    script.write_text(_OWN_LOGGING)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok" and "unconfigured warning" in done.stderr  # still on stderr
