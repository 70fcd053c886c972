"""In-process handlers run as the official worker runs them; slow ones never stall the server."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest
from emulator_support import KEY, Http, blocking, gate, started

from runpod_queue.emulator import Emulator, EndpointSpec


def test_plain_async_generator_and_async_generator_handlers(http: Http) -> None:
    assert http.post("echo", "runsync", json={"input": {"v": 1}}).json()["output"] == {"v": 1}
    assert http.post("aecho", "runsync", json={"input": {"v": 1}}).json()["output"] == {"async": {"v": 1}}
    # Without return_aggregate_stream a generator's final output is the empty list, as the worker sends.
    plain_gen = http.post("tokens", "runsync", json={"input": {"n": 2}}).json()
    assert plain_gen["status"] == "COMPLETED" and plain_gen["output"] == []
    assert http.post("agg", "runsync", json={"input": {"n": 3}}).json()["output"] == ["t0", "t1", "t2"]
    assert http.post("atokens", "runsync", json={"input": {"n": 2}}).json()["output"] == [
        {"token": 0},
        {"token": 1},
    ]


def test_stream_of_an_aggregating_generator_still_hands_out_chunks(http: Http) -> None:
    job_id = http.run("agg", {"n": 3})
    assert http.wait("agg", job_id)["output"] == ["t0", "t1", "t2"]
    chunks = http.get("agg", f"stream/{job_id}").json()["stream"]
    assert [c["output"] for c in chunks] == ["t0", "t1", "t2"]


def test_returned_error_fails_the_job_and_keeps_the_rest_of_the_output(http: Http) -> None:
    body = http.post("faildict", "runsync", json={"input": {}}).json()
    assert body["status"] == "FAILED"
    assert body["error"] == "prompt is required"
    assert body["output"] == {"partial": 1}


def test_exception_fails_the_job_with_runpods_json_error_string(http: Http) -> None:
    body = http.post("raises", "runsync", json={"input": {}}).json()
    assert body["status"] == "FAILED"
    error = json.loads(body["error"])
    assert set(error) >= {"error_type", "error_message", "error_traceback", "hostname", "worker_id"}
    assert error["error_type"] == "<class 'ValueError'>"
    assert error["error_message"] == "model exploded"
    assert "Traceback" in error["error_traceback"] and error["worker_id"] == body["workerId"]


def test_generator_exception_uses_the_workers_plain_string(http: Http) -> None:
    body = http.post("genraises", "runsync", json={"input": {}}).json()
    assert body["status"] == "FAILED"
    assert body["error"].startswith("handler: stream broke \ntraceback:")


def test_handler_receives_id_input_webhook_and_s3_config() -> None:
    seen: list[dict[str, Any]] = []

    def record(job: dict[str, Any]) -> Any:
        seen.append(job)
        return None

    s3 = {"accessId": "a", "accessSecret": "s", "bucketName": "b", "endpointUrl": "https://s3.example"}
    with Emulator({"r": record}) as emu:
        http = Http(emu, key=None)
        body = http.post(
            "r", "runsync", json={"input": {"q": 1}, "webhook": "http://127.0.0.1:9/hook", "s3Config": s3}
        ).json()
        http.close()
    assert seen == [
        {"id": body["id"], "input": {"q": 1}, "webhook": "http://127.0.0.1:9/hook", "s3Config": s3}
    ]
    # The S3 secret is handed to the worker, never echoed back.
    assert "accessSecret" not in json.dumps(body) and "s3Config" not in body


def test_a_handler_mutating_its_input_does_not_change_a_retry() -> None:
    runs: list[Any] = []

    def mutate(job: dict[str, Any]) -> Any:
        runs.append(dict(job["input"]))
        job["input"]["n"] += 1
        return {"error": "again"}

    with Emulator({"m": mutate}) as emu:
        http = Http(emu, key=None)
        job_id = http.run("m", {"n": 1})
        http.wait("m", job_id)
        http.post("m", f"retry/{job_id}")
        http.wait("m", job_id, until=lambda b: b["status"] == "FAILED" and len(runs) == 2)
        http.close()
    assert runs == [{"n": 1}, {"n": 1}]


def test_unserializable_output_fails_the_job_with_a_clear_error() -> None:
    with Emulator({"bad": lambda job: {1, 2}}) as emu:
        http = Http(emu, key=None)
        body = http.post("bad", "runsync", json={"input": {}}).json()
        http.close()
    assert body["status"] == "FAILED" and "not JSON-serializable" in body["error"]


def test_refresh_worker_replaces_the_worker_after_the_job() -> None:
    def refresh(job: dict[str, Any]) -> Any:
        return {"ok": True, "refresh_worker": True}

    with Emulator({"r": EndpointSpec(refresh, workers=1)}) as emu:
        http = Http(emu, key=None)
        first = http.post("r", "runsync", json={"input": {}}).json()
        second = http.post("r", "runsync", json={"input": {}}).json()
        http.close()
    assert first["output"] == {"ok": True}
    assert first["workerId"] != second["workerId"]


def test_n_workers_run_n_jobs_at_once() -> None:
    barrier = threading.Barrier(3, timeout=5)

    def meet(job: dict[str, Any]) -> Any:
        barrier.wait()  # only returns once three handlers run concurrently
        return "met"

    with Emulator({"m": meet}, workers=3) as emu:
        http = Http(emu, key=None)
        ids = [http.run("m", {}) for _ in range(3)]
        bodies = [http.wait("m", job_id) for job_id in ids]
        http.close()
    assert [b["output"] for b in bodies] == ["met"] * 3
    assert len({b["workerId"] for b in bodies}) == 3


def test_a_blocking_sync_handler_stalls_neither_the_server_nor_other_endpoints(http: Http) -> None:
    job_id = http.run("blocking", {}, policy={"executionTimeout": 3_600_000})
    assert started("blocking").wait(5)
    # 40 round trips while the handler holds its thread: a stalled server would time them out.
    for _ in range(20):
        assert http.health("blocking")["workers"]["running"] >= 1
        answer = http.post("echo", "runsync", json={"input": {"x": 1}})
        assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED", answer.text
    assert http.status("blocking", job_id)["status"] == "IN_PROGRESS"
    gate("blocking").set()
    assert http.wait("blocking", job_id)["status"] == "COMPLETED"


def test_api_key_is_not_in_the_emulators_repr() -> None:
    emu = Emulator({"e": lambda job: None}, api_key=KEY)
    assert KEY not in repr(emu)


def test_a_slow_sync_job_does_not_hold_up_quick_ones_of_other_workers() -> None:
    def mixed(job: dict[str, Any]) -> Any:
        if job["input"].get("gate"):
            started("mixed").set()
            gate("mixed").wait(5)
            return "slow"
        return "quick"

    with Emulator({"m": EndpointSpec(mixed, workers=2)}) as emu:
        http = Http(emu, key=None)
        slow = http.run("m", {"gate": True})
        assert started("mixed").wait(5)
        quick = [http.run("m", {}) for _ in range(5)]
        assert [http.wait("m", job_id)["output"] for job_id in quick] == ["quick"] * 5
        assert http.status("m", slow)["status"] == "IN_PROGRESS"
        gate("mixed").set()
        assert http.wait("m", slow)["output"] == "slow"
        http.close()


def test_a_quick_result_is_not_held_back_by_a_slow_job_handed_over_with_it() -> None:
    # Both jobs start in one loop turn, so the handler thread takes them as one batch; it may hold the
    # quick result back while more of the batch runs, but not for as long as the slow one blocks.
    def mixed(job: dict[str, Any]) -> Any:
        if job["input"].get("gate"):
            started("batched").set()
            gate("batched").wait(5)
            return "slow"
        return "quick"

    with Emulator({"m": EndpointSpec(mixed, workers=2)}) as emu:
        http = Http(emu, key=None)

        async def start_both() -> tuple[str, str]:
            endpoint = emu.core.endpoints["m"]
            return emu.core.submit(endpoint, {}).id, emu.core.submit(endpoint, {"gate": True}).id

        quick, slow = emu.call(start_both)
        assert started("batched").wait(5)
        assert http.wait("m", quick)["output"] == "quick"
        assert http.status("m", slow)["status"] == "IN_PROGRESS"
        gate("batched").set()
        assert http.wait("m", slow)["output"] == "slow"
        http.close()


def test_a_job_cancelled_before_its_sync_handler_started_never_runs() -> None:
    ran: list[Any] = []

    def record(job: dict[str, Any]) -> Any:
        ran.append(job["input"]["n"])
        if job["input"]["n"] == 0:
            started("first").set()
            gate("first").wait(5)
        return None

    with Emulator({"r": EndpointSpec(record, workers=1)}) as emu:
        http = Http(emu, key=None)
        first = http.run("r", {"n": 0})
        assert started("first").wait(5)
        second = http.run("r", {"n": 1})
        assert http.post("r", f"cancel/{second}").status_code == 200
        gate("first").set()
        assert http.wait("r", first)["status"] == "COMPLETED"
        third = http.run("r", {"n": 2})
        assert http.wait("r", third)["status"] == "COMPLETED"
        http.close()
    assert ran == [0, 2]


def test_stopping_with_a_long_poll_held_logs_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    with Emulator({"b": blocking}, clock="virtual") as emu:
        http = Http(emu, key=None)
        job_id = http.run("b", {})
        assert started("blocking").wait(5)
        host, port = emu.root_url.removeprefix("http://").rstrip("/").split(":")
        held = socket.create_connection((host, int(port)))
        held.sendall(f"GET /v2/b/status-sync/{job_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # One round trip on another connection: the held request has been read and is waiting by then.
        assert http.health("b")["workers"]["running"] == 1
    gate("blocking").set()
    held.close()
    http.close()
    assert "Exception in ASGI application" not in capfd.readouterr().err
