"""Batch Jobs (`/v2/<endpoint>/batch…`) over loopback HTTP on the virtual clock: states, limits, paging,
the batch lane below /run, cancel draining, and each `batch_*` reading's alternative."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from emulator_support import SEEN, Http, eventually, gate, held, started

from runpod_queue.emulator import Emulator, EndpointSpec, Readings
from shared_support import echo


def with_batch_id(job: dict[str, Any]) -> Any:
    """Echoes its input and the `batchId` its job carries."""
    return {"input": job["input"], "batchId": job.get("batchId")}


@contextmanager
def virtual(endpoints: dict[str, Any], readings: Readings | None = None) -> Iterator[tuple[Emulator, Http]]:
    with Emulator(endpoints, clock="virtual", readings=readings) as emu:
        http = Http(emu, key=None)
        try:
            yield emu, http
        finally:
            http.close()


def create(http: Http, endpoint: str, inputs: list[Any]) -> str:
    answer = http.post(endpoint, "batch", json=[{"input": i} for i in inputs])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "DRAFT" and body["id"].startswith("batch_")
    return str(body["id"])


def summary(http: Http, endpoint: str, batch_id: str) -> dict[str, Any]:
    answer = http.get(endpoint, f"batch/{batch_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def results(http: Http, endpoint: str, batch_id: str, **params: Any) -> dict[str, Any]:
    answer = http.get(endpoint, f"batch/{batch_id}/requests", params=params)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def done(http: Http, endpoint: str, batch_id: str) -> bool:
    s = summary(http, endpoint, batch_id)
    return bool(s["requestCompleted"] + s["requestFailed"] == s["requestTotal"])


def test_lifecycle_draft_to_finalized_with_batch_id_on_every_job_and_paged_results() -> None:
    with virtual({"b": with_batch_id}) as (_emu, http):
        batch_id = create(http, "b", [{"n": 0}, {"n": 1}])
        added = http.post(
            "b", f"batch/{batch_id}/requests", json={"requests": [{"input": {"n": n}} for n in (2, 3)]}
        )
        assert added.status_code == 200 and added.json()["requestTotal"] == 4
        # A DRAFT batch runs nothing.
        draft = summary(http, "b", batch_id)
        assert draft["status"] == "DRAFT" and draft["requestCompleted"] == 0 and draft["endpointId"] == "b"
        assert isinstance(draft["createdAt"], int) and draft["createdAt"] > 1_700_000_000_000  # epoch ms
        first_id = results(http, "b", batch_id)["requests"][0]["id"]
        assert first_id.startswith("req_")
        assert http.client.delete(f"/b/batch/{batch_id}/requests/{first_id}").json()["requestTotal"] == 3
        renamed = http.client.put(f"/b/batch/{batch_id}", json={"name": "nightly"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "nightly"
        finalized = http.post("b", f"batch/{batch_id}/finalize")
        assert finalized.status_code == 200 and finalized.json()["status"] == "FINALIZED"
        eventually(lambda: done(http, "b", batch_id))
        end = summary(http, "b", batch_id)
        assert end["status"] == "FINALIZED"  # no COMPLETED state: the counts say it is done
        assert (end["requestTotal"], end["requestCompleted"], end["requestFailed"]) == (3, 3, 0)
        page1 = results(http, "b", batch_id, limit=2)
        page2 = results(http, "b", batch_id, offset=2, limit=2)
        assert (page1["total"], page1["offset"], page1["limit"], page1["hasMore"]) == (3, 0, 2, True)
        assert page2["hasMore"] is False and len(page2["requests"]) == 1
        items = page1["requests"] + page2["requests"]
        assert {i["output"]["input"]["n"] for i in items} == {1, 2, 3}
        assert all(i["output"]["batchId"] == batch_id and i["status"] == "COMPLETED" for i in items)
        assert all(i["startedAt"].endswith("Z") and i["completedAt"].endswith("Z") for i in items)
        assert all("input" not in i for i in items)  # the documented fields only (reading "omitted")


def test_draft_only_operations_refuse_a_finalized_batch() -> None:
    with virtual({"b": echo}) as (_emu, http):
        batch_id = create(http, "b", [{}])
        rid = results(http, "b", batch_id)["requests"][0]["id"]
        assert http.post("b", f"batch/{batch_id}/finalize").status_code == 200
        late = http.post("b", f"batch/{batch_id}/requests", json={"requests": [{"input": {}}]})
        assert late.status_code == 400 and "only a DRAFT batch" in late.json()["error"]
        assert http.client.delete(f"/b/batch/{batch_id}/requests/{rid}").status_code == 400
        assert http.post("b", f"batch/{batch_id}/finalize").status_code == 400
        assert http.get("b", "batch/batch_nope").status_code == 404


def test_bad_bodies_get_a_clear_400() -> None:
    with virtual({"b": echo}) as (_emu, http):
        assert "top-level JSON array" in http.post("b", "batch", json={"input": {}}).json()["error"]
        assert '"input" field' in http.post("b", "batch", json=[{"prompt": 1}]).json()["error"]
        batch_id = create(http, "b", [])
        bad = http.post("b", f"batch/{batch_id}/requests", json=[{"input": {}}])
        assert bad.status_code == 400 and "JSON object" in bad.json()["error"]
        assert http.client.patch(f"/b/batch/{batch_id}").status_code == 405


def test_the_eleventh_active_batch_is_refused_until_one_ends() -> None:
    with virtual({"b": EndpointSpec(echo, workers=0)}) as (_emu, http):
        ids = [create(http, "b", []) for _ in range(10)]
        refused = http.post("b", "batch", json=[])
        assert refused.status_code == 429 and "10 active batches" in refused.json()["error"]
        assert http.post("b", f"batch/{ids[0]}/cancel").json()["status"] == "CANCELLED"
        create(http, "b", [])
        listed = http.get("b", "batch").json()["batches"]
        assert len(listed) == 11 and listed[-1]["id"] == ids[0]  # newest first


def test_a_batch_holds_at_most_5000_requests() -> None:
    with virtual({"b": EndpointSpec(echo, workers=0)}) as (_emu, http):
        assert http.post("b", "batch", json=[{"input": n} for n in range(5_001)]).status_code == 400
        batch_id = create(http, "b", list(range(5_000)))
        over = http.post("b", f"batch/{batch_id}/requests", json={"requests": [{"input": 1}]})
        assert over.status_code == 400 and "at most 5000" in over.json()["error"]
        assert summary(http, "b", batch_id)["requestTotal"] == 5_000  # nothing of the refused call added


def _add_body(size: int) -> bytes:
    head, tail = b'{"requests":[{"input":"', b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_an_add_call_takes_10_mib_and_not_one_byte_more() -> None:
    with virtual({"b": EndpointSpec(echo, workers=0)}) as (_emu, http):
        batch_id = create(http, "b", [])
        headers = {"content-type": "application/json"}
        ok = http.post("b", f"batch/{batch_id}/requests", content=_add_body(10 * 2**20), headers=headers)
        assert ok.status_code == 200, ok.text
        over = http.post(
            "b", f"batch/{batch_id}/requests", content=_add_body(10 * 2**20 + 1), headers=headers
        )
        assert over.status_code == 413
        assert summary(http, "b", batch_id)["requestTotal"] == 1


def test_batch_requests_wait_below_run_and_low_priority_jobs() -> None:
    with virtual({"h": EndpointSpec(held, workers=1)}) as (_emu, http):
        batch_id = create(http, "h", [{"gate": f"b{n}"} for n in range(3)])
        http.post("h", f"batch/{batch_id}/finalize")
        assert started("b0").wait(5)
        low = http.run("h", {"gate": "low"}, policy={"lowPriority": True})
        run = http.run("h", {"gate": "run"})
        gate("b0").set()
        assert started("run").wait(5)
        gate("run").set()
        assert started("low").wait(5)
        gate("low").set()
        assert started("b1").wait(5)
        assert SEEN[:4] == ["b0", "run", "low", "b1"]
        gate("b1").set()
        gate("b2").set()
        eventually(lambda: done(http, "h", batch_id))
        assert http.wait("h", run)["status"] == "COMPLETED" and http.wait("h", low)["status"] == "COMPLETED"


def test_cancel_ends_queued_requests_at_once_and_drains_running_ones() -> None:
    with virtual({"h": EndpointSpec(held, workers=1)}) as (_emu, http):
        batch_id = create(http, "h", [{"gate": f"c{n}"} for n in range(3)])
        http.post("h", f"batch/{batch_id}/finalize")
        assert started("c0").wait(5)
        answer = http.post("h", f"batch/{batch_id}/cancel").json()
        assert answer["status"] == "FINALIZED" and answer["requestInProgress"] == 1  # draining
        statuses = [r["status"] for r in results(http, "h", batch_id)["requests"]]
        assert statuses == ["IN_PROGRESS", "CANCELLED", "CANCELLED"]
        gate("c0").set()
        eventually(lambda: summary(http, "h", batch_id)["status"] == "CANCELLED")
        end = summary(http, "h", batch_id)
        assert (end["requestCompleted"], end["requestFailed"], end["requestInProgress"]) == (1, 0, 0)
        assert started("c1").is_set() is False
        again = http.post("h", f"batch/{batch_id}/cancel")
        assert again.status_code == 400


def test_a_cancelled_draft_is_cancelled_at_once() -> None:
    with virtual({"b": echo}) as (_emu, http):
        batch_id = create(http, "b", [{}])
        assert http.post("b", f"batch/{batch_id}/cancel").json()["status"] == "CANCELLED"
        assert results(http, "b", batch_id)["requests"][0]["status"] == "CANCELLED"


def test_purge_queue_leaves_batch_requests_to_their_batch() -> None:
    with virtual({"q": EndpointSpec(echo, workers=0)}) as (_emu, http):
        batch_id = create(http, "q", [{}, {}])
        http.post("q", f"batch/{batch_id}/finalize")
        assert http.post("q", "purge-queue").json()["removed"] == 0
        assert [r["status"] for r in results(http, "q", batch_id)["requests"]] == ["IN_QUEUE", "IN_QUEUE"]


# -- the readings ---------------------------------------------------------------------------------


def test_reading_batch_answers_status_answers_only_id_and_status() -> None:
    with virtual({"b": echo}, Readings(batch_answers="status")) as (_emu, http):
        batch_id = create(http, "b", [])
        answer = http.post("b", f"batch/{batch_id}/finalize").json()
        assert answer == {"id": batch_id, "status": "FINALIZED"}


def test_reading_batch_list_array_is_a_bare_array() -> None:
    with virtual({"b": echo}, Readings(batch_list="array")) as (_emu, http):
        batch_id = create(http, "b", [])
        assert [b["id"] for b in http.get("b", "batch").json()] == [batch_id]


def test_reading_batch_request_status_short_names_waiting_and_running_requests() -> None:
    with virtual({"h": EndpointSpec(held, workers=1)}, Readings(batch_request_status="short")) as (
        _emu,
        http,
    ):
        batch_id = create(http, "h", [{"gate": "s0"}, {"gate": "s1"}])
        assert results(http, "h", batch_id)["requests"][0]["status"] == "QUEUED"
        http.post("h", f"batch/{batch_id}/finalize")
        assert started("s0").wait(5)
        assert [r["status"] for r in results(http, "h", batch_id)["requests"]] == ["RUNNING", "QUEUED"]


def test_reading_batch_result_input_echoed_carries_each_input() -> None:
    with virtual({"b": echo}, Readings(batch_result_input="echoed")) as (_emu, http):
        batch_id = create(http, "b", [{"k": "a"}, {"k": "b"}])
        http.post("b", f"batch/{batch_id}/finalize")
        eventually(lambda: done(http, "b", batch_id))
        assert all(r["input"] == r["output"] for r in results(http, "b", batch_id)["requests"])


@pytest.mark.parametrize("reading,first", [("submitted", "o0"), ("finished", "o1")])
def test_reading_batch_result_order(reading: Any, first: str) -> None:
    with virtual({"h": EndpointSpec(held, workers=2)}, Readings(batch_result_order=reading)) as (_emu, http):
        batch_id = create(http, "h", [{"gate": "o0"}, {"gate": "o1"}])
        http.post("h", f"batch/{batch_id}/finalize")
        assert started("o0").wait(5) and started("o1").wait(5)
        gate("o1").set()
        eventually(lambda: summary(http, "h", batch_id)["requestCompleted"] == 1)
        gate("o0").set()
        eventually(lambda: done(http, "h", batch_id))
        assert results(http, "h", batch_id)["requests"][0]["output"]["released"] == first


@pytest.mark.parametrize("reading,kept", [("kept", True), ("retention", False)])
def test_reading_batch_retention(reading: Any, kept: bool) -> None:
    with virtual({"b": echo}, Readings(batch_retention=reading)) as (emu, http):
        batch_id = create(http, "b", [{}])
        http.post("b", f"batch/{batch_id}/finalize")
        eventually(lambda: done(http, "b", batch_id))
        emu.advance(30 * 60)
        assert (http.get("b", f"batch/{batch_id}").status_code == 200) is kept


def test_unknown_reading_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_list"):
        Readings(batch_list="dict")  # type: ignore[arg-type]


def test_routes_need_the_key() -> None:
    with Emulator({"b": echo}, clock="virtual", api_key="k-batch") as emu:
        assert httpx.get(f"{emu.base_url}/b/batch").status_code == 401
