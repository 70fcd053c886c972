"""A run refused before any job can exist leaves no journal (and no output) behind; a journal that existed
before is never removed; a refused /run does not count as a possibly-created job."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from batch_support import FAST, QUICK_POLLS

from runpod_queue import AsyncClient, AuthenticationError, BatchRunner, NotFoundError
from runpod_queue.batch._journal import Journal

HEALTH = {"jobs": {}, "workers": {}}


def _refusing(status: int, error: str) -> httpx.MockTransport:
    """Healthy, but every /run is answered ``status``: RunPod's answer for an endpoint the key may not use
    or that does not exist, as it can come after a successful health check."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/health"):
            return httpx.Response(200, json=HEALTH)
        return httpx.Response(status, json={"error": error})

    return httpx.MockTransport(answer)


def _run(transport: httpx.MockTransport, tmp_path: Path, items: list[object]) -> None:
    async def main() -> None:
        async with AsyncClient(
            api_key="k", base_url="http://rp.test/v2", transport=transport, retries=FAST
        ) as client:
            runner = BatchRunner(
                client.endpoint("abc"),
                journal=tmp_path / "j.sqlite",
                output=tmp_path / "out.jsonl",
                polling=QUICK_POLLS,
            )
            await runner.arun(items)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("status", "error"), [(404, NotFoundError), (401, AuthenticationError)], ids=["404", "401"]
)
def test_a_refused_run_leaves_no_journal_or_output(
    tmp_path: Path, status: int, error: type[Exception]
) -> None:
    items: list[object] = ["not json", json.dumps({"key": "a", "input": {}})]  # an INVALID line is written
    with pytest.raises(error):
        _run(_refusing(status, "no"), tmp_path, items)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_journal_that_existed_is_kept_and_the_refused_run_is_not_ambiguous(tmp_path: Path) -> None:
    def healthy(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/health"):
            return httpx.Response(200, json=HEALTH)
        if request.url.path.endswith("/run"):
            return httpx.Response(200, json={"id": "job-1", "status": "IN_QUEUE"})
        return httpx.Response(200, json={"id": "job-1", "status": "COMPLETED", "output": 1})

    _run(httpx.MockTransport(healthy), tmp_path, [json.dumps({"key": "a", "input": {}})])
    before = (tmp_path / "out.jsonl").read_text()
    with pytest.raises(AuthenticationError):
        _run(_refusing(401, "bad key"), tmp_path, [json.dumps({"key": k, "input": {}}) for k in "ab"])
    assert (tmp_path / "j.sqlite").exists() and (tmp_path / "out.jsonl").read_text() == before
    journal = Journal(tmp_path / "j.sqlite", endpoint_id="abc")
    try:
        assert journal.ambiguous() == 0  # a 401 created no job: b is pending, not "maybe submitted"
        row = journal.get(json.dumps("b"))
        assert row is not None and row.state == "pending"
    finally:
        journal.close()
