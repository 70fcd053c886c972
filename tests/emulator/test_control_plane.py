"""The HTTP control plane: `POST /_emulator/reset`, `GET|PUT /_emulator/faults`, and endpoints created,
changed and removed at run time through `/_emulator/endpoints[/{id}]` — all over loopback HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulator_support import KEY, Http

from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import echo

HANDLERS = Path(__file__).parent / "handlers" / "simple.py"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    endpoints = {"echo": echo, "idle": EndpointSpec(echo, workers=0)}
    with Emulator(endpoints, api_key=KEY, clock="virtual", rate_limits=False) as emulator:
        yield emulator


@pytest.fixture
def http(emu: Emulator) -> Iterator[Http]:
    client = Http(emu)
    yield client
    client.close()


def _jobs(http: Http) -> list[dict[str, Any]]:
    answer = http.control("jobs", "GET")
    assert answer.status_code == 200
    return list(answer.json()["jobs"])


# -- reset ----------------------------------------------------------------------------------------


def test_reset_forgets_jobs_requests_webhooks_counters_and_rewinds_the_clock(
    emu: Emulator, http: Http
) -> None:
    done = http.post("echo", "runsync", json={"input": {"n": 1}, "webhook": "http://127.0.0.1:9/hook"})
    assert done.json()["status"] == "COMPLETED"
    queued = http.run("idle", {"n": 2})
    assert http.control("advance", json={"seconds": 30}).json() == {"now": 30}
    assert emu.webhook_attempts and len(_jobs(http)) == 2 and emu.requests

    answer = http.control("reset")
    assert answer.status_code == 200
    assert answer.json() == {"reset": True, "now": 0, "endpoints": ["echo", "idle"]}
    assert emu.now == 0
    assert _jobs(http) == []
    assert http.control("requests", "GET").json() == {"requests": []}
    assert emu.webhook_attempts == []
    assert http.get("idle", f"status/{queued}").status_code == 404
    assert http.get("echo", "health").json()["jobs"] == {
        "completed": 0,
        "failed": 0,
        "inProgress": 0,
        "inQueue": 0,
        "retried": 0,
    }
    # The endpoints stay and serve as before.
    again = http.post("echo", "runsync", json={"input": {"n": 3}})
    assert again.json()["output"] == {"n": 3}


def test_reset_answers_a_held_runsync_as_cancelled_and_sends_no_webhook(emu: Emulator, http: Http) -> None:
    answers: list[dict[str, Any]] = []

    def hold() -> None:
        client = Http(emu)
        answers.append(client.post("idle", "runsync", json={"input": {}}).json())
        client.close()

    thread = threading.Thread(target=hold)
    thread.start()
    while not _jobs(http):  # the runsync is queued and held (no worker, virtual time stands still)
        threading.Event().wait(0.005)
    assert http.control("reset").status_code == 200
    thread.join(5)
    assert answers and answers[0]["status"] == "CANCELLED"
    assert emu.webhook_attempts == []


def test_reset_keeps_timers_relative_a_new_jobs_ttl_counts_from_the_new_zero(http: Http) -> None:
    http.run("idle", {}, policy={"ttl": 10_000})
    http.control("advance", json={"seconds": 3})
    http.control("reset")
    fresh = http.run("idle", {}, policy={"ttl": 10_000})
    http.control("advance", json={"seconds": 9})
    assert http.status("idle", fresh)["status"] == "IN_QUEUE"
    http.control("advance", json={"seconds": 1})
    assert http.status("idle", fresh)["status"] == "TIMED_OUT"


def test_reset_needs_the_key_and_post(emu: Emulator, http: Http) -> None:
    job = http.run("idle", {})
    anonymous = Http(emu, key=None)
    assert anonymous.control("reset").status_code == 401
    anonymous.close()
    assert http.control("reset", "GET").status_code == 405
    assert http.status("idle", job)["status"] == "IN_QUEUE"


def test_emulator_reset_from_python_is_the_same_reset(emu: Emulator, http: Http) -> None:
    http.run("idle", {})
    http.control("advance", json={"seconds": 2})
    emu.reset()
    assert emu.now == 0 and emu.jobs("idle") == []


# -- faults ---------------------------------------------------------------------------------------


def test_faults_put_switches_injection_on_and_an_empty_put_switches_it_off(http: Http) -> None:
    defaults = {
        "error_429": 0.0,
        "error_503": 0.0,
        "error_500": 0.0,
        "drop": 0.0,
        "latency": 0.0,
        "seed": None,
    }
    assert http.control("faults", "GET").json() == defaults
    put = http.control("faults", "PUT", json={"error_503": 1, "seed": 7})
    assert put.status_code == 200
    assert put.json() == {**defaults, "error_503": 1.0, "seed": 7}
    assert http.control("faults", "GET").json() == put.json()
    assert http.post("echo", "run", json={"input": {}}).status_code == 503
    # The control plane itself is never fault-injected.
    assert http.control("faults", "PUT", json={}).json() == defaults
    assert http.post("echo", "run", json={"input": {}}).status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"error_503": 2}, "probability in [0, 1]"),
        ({"error_503": "1"}, "must be a number"),
        ({"boom": 1}, "unknown fault field(s) ['boom']"),
        ({"seed": 1.5}, '"seed" must be an integer'),
        ({"latency": -1}, "latency"),
    ],
)
def test_faults_put_refuses_a_bad_body_and_keeps_the_old_faults(
    http: Http, body: dict[str, Any], needle: str
) -> None:
    http.control("faults", "PUT", json={"error_429": 0.5})
    answer = http.control("faults", "PUT", json=body)
    assert answer.status_code == 400
    assert needle in answer.json()["error"]
    assert http.control("faults", "GET").json()["error_429"] == 0.5


# -- endpoints ------------------------------------------------------------------------------------


def test_endpoints_lists_every_endpoint(http: Http) -> None:
    listed = http.control("endpoints", "GET").json()["endpoints"]
    assert [e["id"] for e in listed] == ["echo", "idle"]
    assert listed[1]["workers"] == 0 and listed[0]["workers"] == 1
    assert listed[0]["handler"].endswith(":echo")


def test_put_creates_an_endpoint_from_a_handler_reference_then_changes_then_removes_it(http: Http) -> None:
    created = http.control("endpoints/new", "PUT", json={"handler": f"{HANDLERS}:shout", "workers": 0})
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "new" and created.json()["workers"] == 0
    job = http.run("new", {"text": "hi"})
    assert http.status("new", job)["status"] == "IN_QUEUE"

    changed = http.control("endpoints/new", "PUT", json={"handler": f"{HANDLERS}:shout", "workers": 1})
    assert changed.status_code == 200 and changed.json()["workers"] == 1
    assert http.wait("new", job)["output"] == "HI"  # the queued job ran on the worker just added
    assert http.control("endpoints/new", "GET").json()["jobs"] == 1

    removed = http.control("endpoints/new", "DELETE")
    assert removed.status_code == 200 and removed.json() == {"removed": "new"}
    assert http.post("new", "run", json={"input": {}}).status_code == 404
    assert http.control("endpoints/new", "GET").status_code == 404
    assert [e["id"] for e in http.control("endpoints", "GET").json()["endpoints"]] == ["echo", "idle"]


def test_put_changes_the_handler_of_a_serving_endpoint(http: Http) -> None:
    assert http.post("echo", "runsync", json={"input": {"text": "a"}}).json()["output"] == {"text": "a"}
    http.control("endpoints/echo", "PUT", json={"handler": f"{HANDLERS}:shout"})
    assert http.post("echo", "runsync", json={"input": {"text": "a"}}).json()["output"] == "A"


def test_put_with_no_handler_makes_an_endpoint_for_external_workers(http: Http) -> None:
    created = http.control("endpoints/ext", "PUT", json={})
    assert created.status_code == 201
    assert created.json()["handler"] is None and created.json()["workers"] == 0
    job = http.run("ext", {"n": 1})
    taken = http.client.get("/ext/job-take/w1")
    assert taken.status_code == 200 and taken.json()["id"] == job


def test_removing_an_endpoint_answers_a_held_request_and_drops_its_jobs(emu: Emulator, http: Http) -> None:
    job = http.run("idle", {})
    assert http.control("endpoints/idle", "DELETE").status_code == 200
    assert http.get("idle", f"status/{job}").status_code == 404
    assert [e["id"] for e in http.control("endpoints", "GET").json()["endpoints"]] == ["echo"]


@pytest.mark.parametrize(
    ("path", "method", "body", "status", "needle"),
    [
        ("endpoints/bad id!", "PUT", {}, 400, "invalid endpoint id"),
        ("endpoints/x", "PUT", {"handler": "no/such/file.py"}, 400, "no/such/file.py"),
        ("endpoints/x", "PUT", {"workers": -1}, 400, "workers: must be an integer >= 0"),
        ("endpoints/x", "PUT", {"handler": 3}, 400, "handler: must be a reference"),
        ("endpoints/x", "PUT", {"colour": "red"}, 400, "colour: unknown field"),
        ("endpoints/x", "DELETE", None, 404, "not found"),
        ("endpoints/x", "POST", None, 405, "DELETE or GET or PUT"),
    ],
)
def test_endpoint_routes_refuse_bad_requests_clearly(
    http: Http, path: str, method: str, body: Any, status: int, needle: str
) -> None:
    answer = http.control(path, method, json=body)
    assert answer.status_code == status
    assert needle in answer.json()["error"]
    assert "x" not in {e["id"] for e in http.control("endpoints", "GET").json()["endpoints"]}


def test_endpoint_routes_need_the_key(emu: Emulator) -> None:
    anonymous = Http(emu, key="wrong")
    for path, method in (("endpoints", "GET"), ("endpoints/z", "PUT"), ("faults", "GET"), ("faults", "PUT")):
        answer = anonymous.control(path, method, json={})
        assert answer.status_code == 401 and KEY not in answer.text
    anonymous.close()
    assert "z" not in emu.endpoint_ids
