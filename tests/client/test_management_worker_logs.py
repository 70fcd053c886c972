"""Management.worker_logs / AsyncManagement.worker_logs against the emulator's logs route (server-sent
events), parametrized so the sync and async clients cannot drift; and the parsing of a RunPod-shaped
stream that has no backfill mark and stays open."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from runpod_queue import AsyncManagement, LogLine, Management, NotFoundError
from runpod_queue.emulator import Emulator, EndpointSpec

KEY = "logs-client-key"


def talker(job: dict[str, Any]) -> Any:
    print(f"hello {job['input']['n']}")
    return job["input"]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    endpoints = {
        "talk": EndpointSpec(talker, workers=1),
        "scaled": EndpointSpec(talker, workers_max=1, cold_start=5, idle_timeout=10),
    }
    with Emulator(endpoints, api_key=KEY, clock="virtual") as emu:
        yield emu


def _run(emu: Emulator, endpoint: str, n: int) -> dict[str, Any]:
    body: dict[str, Any] = httpx.post(
        f"{emu.base_url}/{endpoint}/runsync", json={"input": {"n": n}}, headers={"Authorization": KEY}
    ).json()
    assert body["status"] == "COMPLETED", body
    return body


def _sync(emu: Emulator, *args: Any, stop_after: int | None = None, **kwargs: Any) -> list[LogLine]:
    got: list[LogLine] = []
    with Management(KEY, base_url=emu.management_url) as mgmt:
        lines = mgmt.worker_logs(*args, **kwargs)
        for line in lines:
            got.append(line)
            if stop_after is not None and len(got) == stop_after:
                break
    return got


def _async(emu: Emulator, *args: Any, stop_after: int | None = None, **kwargs: Any) -> list[LogLine]:
    async def main() -> list[LogLine]:
        got: list[LogLine] = []
        async with AsyncManagement(KEY, base_url=emu.management_url) as mgmt:
            lines = mgmt.worker_logs(*args, **kwargs)
            async for line in lines:
                got.append(line)
                if stop_after is not None and len(got) == stop_after:
                    break
            await lines.aclose()  # type: ignore[attr-defined]
        return got

    return asyncio.run(main())


both = pytest.mark.parametrize("read", [_sync, _async], ids=["sync", "async"])


@both
def test_worker_logs_yields_typed_lines_and_ends_after_the_backfill(emu: Emulator, read: Any) -> None:
    job = _run(emu, "talk", 5)
    lines = read(emu, "talk", job["workerId"])
    assert all(isinstance(line, LogLine) for line in lines)
    assert [(line.source, line.line) for line in lines if line.source == "container"] == [
        ("container", "hello 5")
    ]
    assert lines[-1].line == f"job {job['id']} ended: COMPLETED" and lines[-1].job_id == job["id"]
    assert all(line.ts.tzinfo is not None and line.id for line in lines)
    container = read(emu, "talk", job["workerId"], source="container", tail=1)
    assert [line.line for line in container] == ["hello 5"]


@both
def test_since_starts_at_a_time(emu: Emulator, read: Any) -> None:
    worker = _run(emu, "talk", 1)["workerId"]
    emu.advance(120)
    _run(emu, "talk", 2)
    first = read(emu, "talk", worker)
    later = first[-1].ts - timedelta(seconds=1)
    since = read(emu, "talk", worker, since=later)
    assert since and all(line.ts >= later for line in since)
    assert "hello 1" not in [line.line for line in since] and "hello 2" in [line.line for line in since]
    as_text = read(emu, "talk", worker, since=later.isoformat())
    assert [line.line for line in as_text] == [line.line for line in since]


@both
def test_follow_streams_until_the_worker_stops(emu: Emulator, read: Any) -> None:
    first = httpx.post(f"{emu.base_url}/scaled/run", json={"input": {"n": 1}}, headers={"Authorization": KEY})
    emu.advance(5)  # the cold start ends; the job runs
    [worker] = [w.id for w in emu.workers("scaled")]
    _ = first
    got: list[LogLine] = []

    def stop_the_worker_once_following() -> None:
        for _ in range(500):
            if emu.core.logs._buffers[worker].waiters:
                break
            threading.Event().wait(0.01)
        emu.advance(10)  # its idle timeout

    helper = threading.Thread(target=stop_the_worker_once_following)
    helper.start()
    got = read(emu, "scaled", worker, follow=True)
    helper.join(10)
    assert got[-1].line == "worker stopped: idle timeout" and got[-1].source == "system"


@both
def test_follow_stops_when_the_caller_stops(emu: Emulator, read: Any) -> None:
    worker = _run(emu, "talk", 1)["workerId"]
    got = read(emu, "talk", worker, follow=True, stop_after=2)
    assert len(got) == 2


@both
def test_unknown_worker_is_a_not_found_error(emu: Emulator, read: Any) -> None:
    with pytest.raises(NotFoundError, match="worker 'nope' not found on endpoint 'talk'"):
        read(emu, "talk", "nope")
    with pytest.raises(NotFoundError, match="endpoint 'missing' not found"):
        read(emu, "missing", "nope")


def test_bad_arguments_are_refused_before_sending(emu: Emulator) -> None:
    with Management(KEY, base_url=emu.management_url) as mgmt:
        with pytest.raises(ValueError, match="tail must be an int from 0 to 5000"):
            mgmt.worker_logs("talk", "w", tail=9000)
        with pytest.raises(ValueError, match="source must be 'container' or 'system'"):
            mgmt.worker_logs("talk", "w", source="kernel")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timezone-aware"):
            mgmt.worker_logs("talk", "w", since=datetime(2026, 1, 1))
        with pytest.raises(ValueError, match="RFC 3339"):
            mgmt.worker_logs("talk", "w", since="yesterday")


def test_a_runpod_shaped_stream_without_a_backfill_mark_ends_when_quiet() -> None:
    # RunPod's stream stays open and has no end-of-backfill comment: without follow, the client stops
    # once the server is quiet. A mock transport's stream simply ends here, which reads the same way.
    body = (
        b"id: 2026-06-01T12:05:04Z/000000000042\n"
        b'data: {"ts":"2026-06-01T12:05:04Z","source":"container","line":"Worker ready."}\n\n'
        b": keep-alive\n\n"
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with Management("k", base_url="https://api.runpod.io/v2", transport=httpx.MockTransport(handler)) as mgmt:
        [line] = list(mgmt.worker_logs("ep", "worker_abc", tail=10))
    assert line == LogLine(
        ts=datetime(2026, 6, 1, 12, 5, 4, tzinfo=UTC),
        source="container",
        line="Worker ready.",
        id="2026-06-01T12:05:04Z/000000000042",
        job_id=None,
    )
    [request] = seen
    assert request.url.path == "/v2/serverless/ep/workers/worker_abc/logs"
    assert request.url.params["tail"] == "10" and "follow" not in request.url.params
    assert request.headers["authorization"] == "Bearer k"


def test_code_written_for_runpod_reads_logs_under_mock_runpod() -> None:
    from runpod_queue import Client
    from runpod_queue.testing import mock_runpod

    with mock_runpod({"talk": talker}), Client() as client, Management() as mgmt:
        job = client.endpoint("talk").run_sync({"n": 9})
        assert mgmt.base_url == "https://api.runpod.io/v2"
        assert job.worker_id is not None
        lines = [line.line for line in mgmt.worker_logs("talk", job.worker_id, source="container")]
    assert lines == ["hello 9"]
