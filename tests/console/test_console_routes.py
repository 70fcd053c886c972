"""The console's JSON and server-sent-event routes: shapes, auth, bounds, bad input."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runpod_queue.emulator import Emulator
from runpod_queue.emulator._console import SCAN_LIMIT, VALUE_LIMIT
from shared_support import EmuSetup, echo

KEY = "console-route-key-91aa"
AUTH = {"authorization": f"Bearer {KEY}"}
HOLD = threading.Event()


def held(job: dict[str, Any]) -> Any:
    HOLD.wait(10)
    return {"ok": True}


def tokens(job: dict[str, Any]) -> Any:
    yield from (f"t{i}" for i in range(150))


def fail(job: dict[str, Any]) -> Any:
    raise RuntimeError("boom")


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    endpoints = {"echo": echo, "held": held, "tokens": tokens, "fail": fail}
    options = {"api_key": KEY, "clock": "virtual", "rate_limits": False}
    return EmuSetup(lambda: endpoints, options, before_stop=HOLD.set)


@pytest.fixture
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.root_url, headers=AUTH) as client:
        yield client


def test_page_and_files_are_public_with_a_strict_policy(emu: Emulator) -> None:
    page = httpx.get(emu.root_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(emu.root_url + "/_console/static/console.js")
    assert script.status_code == 200 and "sessionStorage" in script.text
    assert httpx.get(emu.root_url + "/_console/static/../core.py").status_code == 404
    assert httpx.post(emu.root_url + "/").status_code == 405


def test_the_submit_form_comes_before_the_job_list() -> None:
    # With 100 job rows after it, a form placed below the list sat ~3,900 px down the page.
    with Emulator({"echo": echo}) as emu:
        page = httpx.get(emu.root_url + "/").text
    assert page.index('id="submit-form"') < page.index('id="jobs"')


@pytest.mark.parametrize("path", ["snapshot", "events", "job?endpoint=echo&id=x"])
@pytest.mark.parametrize("key", [None, "wrong"])
def test_data_routes_need_the_key(emu: Emulator, path: str, key: str | None) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    answer = httpx.get(f"{emu.root_url}/_console/api/{path}", headers=headers)
    assert answer.status_code == 401
    assert KEY not in answer.text


def test_snapshot_shape(emu: Emulator, http: httpx.Client) -> None:
    job = http.post("/v2/echo/runsync", json={"input": {"a": 1}}).json()
    snap = http.get("/_console/api/snapshot").json()
    assert snap["clock"]["kind"] == "virtual"
    assert [e["id"] for e in snap["endpoints"]] == ["echo", "held", "tokens", "fail"]
    echo_ep = snap["endpoints"][0]
    assert echo_ep["completed"] >= 1 and echo_ep["handler"] == "in-process"
    assert echo_ep["workers"]["inProcess"] == {"idle": 1, "running": 0}
    assert echo_ep["series"] and len(echo_ep["series"][0]) == 4
    assert snap["jobs"]["items"][0] == {
        "id": job["id"],
        "endpoint": "echo",
        "status": "COMPLETED",
        "delayTime": job["delayTime"],
        "executionTime": job["executionTime"],
        "workerId": job["workerId"],
        "createdAt": snap["jobs"]["items"][0]["createdAt"],
    }


def test_window_is_newest_first_across_endpoints_filtered_and_bounded(
    emu: Emulator, http: httpx.Client
) -> None:
    ids = []
    for endpoint in ("echo", "fail", "echo", "fail"):
        emu.advance(1)  # distinct submission times on the virtual clock
        ids.append(http.post(f"/v2/{endpoint}/runsync", json={"input": {}}).json()["id"])
    items = http.get("/_console/api/snapshot", params={"limit": 4}).json()["jobs"]["items"]
    assert [i["id"] for i in items] == ids[::-1]
    failed = http.get("/_console/api/snapshot", params={"status": "FAILED", "endpoint": "fail"}).json()
    assert [i["id"] for i in failed["jobs"]["items"]][:2] == [ids[3], ids[1]]
    assert {i["status"] for i in failed["jobs"]["items"]} == {"FAILED"}
    only_echo = http.get("/_console/api/snapshot", params={"endpoint": "echo", "limit": 1}).json()
    assert [i["id"] for i in only_echo["jobs"]["items"]] == [ids[2]]
    assert only_echo["jobs"]["complete"] is True


def test_window_scans_a_bounded_number_of_jobs(emu: Emulator, http: httpx.Client) -> None:
    endpoint = emu.core.endpoints["held"]

    async def fill() -> None:
        for i in range(SCAN_LIMIT + 10):
            emu.core.submit(endpoint, {"i": i})

    emu.call(fill)
    answer = http.get("/_console/api/snapshot", params={"endpoint": "held", "status": "TIMED_OUT"})
    jobs = answer.json()["jobs"]
    assert jobs["items"] == [] and jobs["scanned"] == SCAN_LIMIT and jobs["complete"] is False
    assert jobs["retained"] >= SCAN_LIMIT + 10
    assert http.post("/v2/held/purge-queue").json()["removed"] >= SCAN_LIMIT


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ({"status": "DONE"}, 400, "not a job status"),
        ({"endpoint": "nope"}, 404, "endpoint 'nope' not found"),
        ({"limit": "0"}, 400, "limit=0 is out of range"),
        ({"limit": "501"}, 400, "out of range"),
        ({"limit": "ten"}, 400, "must be an integer"),
    ],
)
def test_bad_filters_are_clear_errors(
    http: httpx.Client, query: dict[str, str], status: int, fragment: str
) -> None:
    for route in ("snapshot", "events"):
        answer = http.get(f"/_console/api/{route}", params=query)
        assert answer.status_code == status and fragment in answer.json()["error"]


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert "routes: snapshot, events, job" in http.get("/_console/api/nope").json()["error"]
    assert http.post("/_console/api/snapshot").status_code == 405
    assert http.get("/_console/api/events", params={"interval": "50"}).status_code == 400


def test_events_stream_snapshots(emu: Emulator, http: httpx.Client) -> None:
    seen = []
    with http.stream("GET", "/_console/api/events", params={"interval": 200, "limit": 2}) as answer:
        assert answer.headers["content-type"] == "text/event-stream"
        event = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                seen.append((event, json.loads(line[6:])))
                if len(seen) == 2:
                    break
    assert [e for e, _ in seen] == ["snapshot", "snapshot"]
    assert all(len(data["jobs"]["items"]) <= 2 for _, data in seen)


def test_job_page_data(emu: Emulator, http: httpx.Client) -> None:
    ok = http.post("/v2/echo/runsync", json={"input": {"x": [1, 2]}}).json()
    detail = http.get("/_console/api/job", params={"endpoint": "echo", "id": ok["id"]}).json()
    assert detail["input"] == {"json": {"x": [1, 2]}, "bytes": 11}
    assert detail["output"]["json"] == {"x": [1, 2]}
    assert [h["status"] for h in detail["history"]] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert detail["history"][1]["note"] == ok["workerId"]

    bad = http.post("/v2/fail/runsync", json={"input": {}}).json()
    error = http.get("/_console/api/job", params={"endpoint": "fail", "id": bad["id"]}).json()["error"]
    assert error["message"] == "boom" and "RuntimeError" in error["type"]
    assert "Traceback" in error["traceback"] and error["raw"] == bad["error"]

    # A retried job keeps the history of its first attempt.
    assert http.post(f"/v2/fail/retry/{bad['id']}").status_code == 200
    emu.advance(0)
    retried = http.get(f"/v2/fail/status-sync/{bad['id']}").json()
    history = http.get("/_console/api/job", params={"endpoint": "fail", "id": bad["id"]}).json()["history"]
    assert [h["status"] for h in history] == [
        "IN_QUEUE",
        "IN_PROGRESS",
        "FAILED",
        "IN_QUEUE",
        "IN_PROGRESS",
        "FAILED",
    ]
    assert history[3]["note"] == "retry" and retried["status"] == "FAILED"


def test_stream_chunks_are_kept_bounded_after_streaming(emu: Emulator, http: httpx.Client) -> None:
    job = http.post("/v2/tokens/runsync", json={"input": {}}).json()
    assert len(http.get(f"/v2/tokens/stream/{job['id']}").json()["stream"]) == 150
    chunks = http.get("/_console/api/job", params={"endpoint": "tokens", "id": job["id"]}).json()["chunks"]
    assert chunks["shown"] == 100 and chunks["unread"] == 0
    assert [c["json"] for c in chunks["items"][:2]] == ["t0", "t1"]


def test_big_values_are_cut_and_secrets_never_shown(emu: Emulator, http: httpx.Client) -> None:
    s3 = {"accessId": "AK", "accessSecret": "s3-secret-value", "bucketName": "b", "endpointUrl": "http://s3"}
    big = "x" * (VALUE_LIMIT + 10)
    job = http.post("/v2/echo/runsync", json={"input": {"big": big}, "s3Config": s3}).json()
    answer = http.get("/_console/api/job", params={"endpoint": "echo", "id": job["id"]})
    detail = answer.json()
    assert detail["input"]["cut"] is True and len(detail["input"]["text"]) == VALUE_LIMIT
    assert detail["output"]["cut"] is True
    assert detail["s3Config"] is True and "s3-secret-value" not in answer.text


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({}, 400, "?endpoint=<endpoint id>&id=<job id>"),
        ({"endpoint": "echo"}, 400, "?endpoint="),
        ({"endpoint": "nope", "id": "x"}, 404, "endpoint 'nope' not found"),
        ({"endpoint": "echo", "id": "missing-u1"}, 404, "job missing-u1 not found"),
    ],
)
def test_job_bad_input(http: httpx.Client, params: dict[str, str], status: int, fragment: str) -> None:
    answer = http.get("/_console/api/job", params=params)
    assert answer.status_code == status and fragment in answer.json()["error"]


def test_any_key_is_accepted_without_one() -> None:
    with Emulator({"echo": echo}) as emu:
        assert httpx.get(emu.root_url + "/_console/api/snapshot").status_code == 200


def test_a_failing_route_is_a_500_with_a_log_line(
    emu: Emulator, http: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(query: dict[str, str]) -> dict[str, Any]:
        raise RuntimeError("bug")

    assert emu.app.console is not None
    monkeypatch.setattr(emu.app.console, "snapshot", broken)
    answer = http.get("/_console/api/snapshot")
    assert answer.status_code == 500 and "see the server log" in answer.json()["error"]
    assert "console route /_console/api/snapshot failed" in caplog.text


def test_external_workers_by_state() -> None:
    with Emulator({"ext": None}, clock="virtual") as emu, httpx.Client(base_url=emu.root_url) as http:
        assert http.get("/v2/ext/ping/worker-a").status_code == 200

        def ext() -> dict[str, Any]:
            endpoint = http.get("/_console/api/snapshot").json()["endpoints"][0]
            assert endpoint["handler"] == "external workers"
            return endpoint

        assert ext()["workers"]["external"] == {"idle": 1, "running": 0, "unhealthy": 0}
        assert ext()["workerList"] == [{"id": "worker-a", "kind": "external", "state": "idle", "jobId": None}]
        emu.advance(31)  # silent past Timings.worker_lost_after (30 s)
        assert ext()["workers"]["external"] == {"idle": 0, "running": 0, "unhealthy": 1}
        assert ext()["workers"]["inProcess"] == {"idle": 0, "running": 0}


def test_webhook_attempts_with_their_answers(emu: Emulator, http: httpx.Client) -> None:
    # Port 9 on loopback refuses: every attempt fails, and each is retried 10 s later on the clock.
    job = http.post("/v2/echo/runsync", json={"input": {}, "webhook": "http://127.0.0.1:9/hook"}).json()
    emu.advance(0)  # the first POST's answer is in
    emu.advance(10)  # the second attempt's
    detail = http.get("/_console/api/job", params={"endpoint": "echo", "id": job["id"]}).json()
    attempts = detail["webhookAttempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert all(
        not a["delivered"] and a["statusCode"] is None and a["error"] == "connection refused"
        for a in attempts
    )
    assert attempts[1]["at"] - attempts[0]["at"] == pytest.approx(10)
    assert detail["webhook"] == "http://127.0.0.1:9/hook"


def test_snapshot_carries_the_emulators_latest_warnings(emu: Emulator, http: httpx.Client) -> None:
    # The page shows them in a banner: a held loop or jobs forgotten past the cap are seen there too.
    http.post("/v2/echo/run", json={"input": {}, "webhookV2": "http://127.0.0.1:9/h"})
    warnings = http.get("/_console/api/snapshot").json()["warnings"]
    assert 1 <= len(warnings) <= 5
    assert warnings[-1]["kind"] == "ignored_keys" and "webhookV2" in warnings[-1]["message"]


def test_snapshot_shows_each_endpoints_fleet_by_rest_v2_status() -> None:
    from runpod_queue.emulator import EndpointSpec

    endpoints = {
        "fixed": EndpointSpec(echo, workers=2),
        "scaled": EndpointSpec(echo, workers_min=1, workers_max=3, cold_start=10, idle_timeout=60),
    }
    with (
        Emulator(endpoints, api_key=KEY, clock="virtual", rate_limits=False) as emu,
        httpx.Client(base_url=emu.root_url, headers=AUTH) as http,
    ):

        def fleets() -> dict[str, Any]:
            snap = http.get("/_console/api/snapshot").json()
            return {e["id"]: e["fleet"] for e in snap["endpoints"]}

        fixed = fleets()["fixed"]
        assert (fixed["fixed"], fixed["min"], fixed["max"], fixed["total"]) == (True, 2, 2, 2)
        assert fixed["summary"] == {
            "INITIALIZING": 0,
            "IDLE": 2,
            "RUNNING": 0,
            "THROTTLED": 0,
            "UNHEALTHY": 0,
        }
        scaled = fleets()["scaled"]
        assert (scaled["fixed"], scaled["min"], scaled["max"], scaled["effectiveMax"]) == (False, 1, 3, 3)
        assert (scaled["idleTimeout"], scaled["coldStart"], scaled["scaler"]) == (60.0, 10.0, "queue_delay")
        [worker] = scaled["workers"]
        assert (worker["status"], worker["uptime"], worker["reason"]) == ("INITIALIZING", None, None)
        emu.set_capacity("scaled", gpus=1)
        emu.update_endpoint("scaled", workers_min=2)  # the second worker finds no GPU
        scaled = fleets()["scaled"]
        assert scaled["capacity"] == 1 and scaled["summary"]["THROTTLED"] == 1
        [throttled] = [w for w in scaled["workers"] if w["status"] == "THROTTLED"]
        assert throttled["reason"] == "no GPU free: capacity is 1"
        emu.advance(10)
        scaled = fleets()["scaled"]
        assert scaled["summary"]["IDLE"] == 1 and [
            w["uptime"] for w in scaled["workers"] if w["status"] == "IDLE"
        ] == [0]
