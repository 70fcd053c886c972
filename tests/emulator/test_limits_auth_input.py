"""Payload limits, rate limits with Retry-After, auth, and bad input: always a 4xx that says what is wrong."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from emulator_support import KEY, Http, gate, held, started

from runpod_queue import OperationLimit, RateLimits
from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import echo

# -- payload limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("route,size", [("run", 10_000_100), ("runsync", 20_000_100)])
def test_oversized_payloads_are_refused_with_413(http: Http, route: str, size: int) -> None:
    body = b'{"input": {"blob": "' + b"x" * size + b'"}}'
    response = http.post("echo", route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    message = response.json()["error"]
    assert "MB" in message and "s3Config" in message


def test_runsync_accepts_what_run_refuses(http: Http) -> None:
    body = b'{"input": {"blob": "' + b"x" * 10_500_000 + b'"}}'
    assert http.post("echo", "run", content=body).status_code == 413
    response = http.post("echo", "runsync", content=body, params={"wait": 300_000})
    assert response.status_code == 200 and response.json()["status"] == "COMPLETED"


def test_chunked_body_without_length_is_counted_too(http: Http) -> None:
    def chunks() -> Any:
        yield b'{"input": {"blob": "'
        for _ in range(11):
            yield b"x" * 1_000_000
        yield b'"}}'

    response = http.post("echo", "run", content=chunks())
    assert response.status_code == 413


# -- rate limits --------------------------------------------------------------------------------


def test_requests_over_the_window_get_429_with_retry_after_from_the_window() -> None:
    limits = RateLimits(limits={"run": OperationLimit(5, None), "status": OperationLimit(3, None)})
    # No workers: a running one would lift the window to per_worker_allowance (see the test below).
    idle = EndpointSpec(echo, workers=0)
    with Emulator({"e": idle, "f": idle}, rate_limits=limits, clock="virtual") as emu:
        http = Http(emu, key=None)
        codes = [http.post("e", "run", json={"input": {}}).status_code for _ in range(5)]
        emu.advance(4)
        codes += [http.post("e", "run", json={"input": {}}).status_code for _ in range(2)]
        assert codes == [200] * 5 + [429] * 2
        limited = http.post("e", "run", json={"input": {}})
        assert "rate limit" in limited.json()["error"]
        assert limited.headers["retry-after"] == "6"  # the first of the five leaves the window at 10 s
        emu.advance(5.5)
        assert http.post("e", "run", json={"input": {}}).headers["retry-after"] == "1"  # 0.5 s, rounded up
        emu.advance(0.5)
        assert http.post("e", "run", json={"input": {}}).status_code == 200
        # Per endpoint: another endpoint has its own window.
        assert http.post("f", "run", json={"input": {}}).status_code == 200
        # Per operation: health has no limit, status its own.
        assert all(http.get("e", "health").status_code == 200 for _ in range(10))
        http.close()


def test_the_client_side_margin_does_not_apply_to_the_server() -> None:
    limits = RateLimits(limits={"run": OperationLimit(1, None)}, window=2.0, margin=5.0)
    with Emulator({"e": EndpointSpec(echo, workers=0)}, rate_limits=limits, clock="virtual") as emu:
        http = Http(emu, key=None)
        assert http.post("e", "run", json={"input": {}}).status_code == 200
        assert http.post("e", "run", json={"input": {}}).headers["retry-after"] == "2"
        emu.advance(2)
        assert http.post("e", "run", json={"input": {}}).status_code == 200
        http.close()


def test_the_window_allows_more_while_workers_run() -> None:
    # max(base, running workers x per_worker_allowance): two running workers allow 2 x 3 runs.
    limits = RateLimits(limits={"run": OperationLimit(2, None)})
    with Emulator(
        {"h": EndpointSpec(held, workers=2)}, rate_limits=limits, per_worker_allowance=3, clock="virtual"
    ) as emu:
        http = Http(emu, key=None)
        for name in ("pw1", "pw2"):
            http.run("h", {"gate": name})
            assert started(name).wait(5)
        codes = [http.post("h", "run", json={"input": {"gate": "pw3"}}).status_code for _ in range(5)]
        assert codes == [200] * 4 + [429]  # 2 already counted in the window, 6 allowed
        for name in ("pw1", "pw2", "pw3"):
            gate(name).set()
        http.close()


def test_in_flight_cap_answers_429_while_the_cap_is_full() -> None:
    limits = RateLimits(limits={"runsync": OperationLimit(100, 1)})
    with Emulator({"h": EndpointSpec(held, workers=2)}, rate_limits=limits, clock="virtual") as emu:
        http = Http(emu, key=None)
        results: list[int] = []
        first = threading.Thread(
            target=lambda: results.append(
                http.post(
                    "h", "runsync", json={"input": {"gate": "cap"}}, params={"wait": 300_000}
                ).status_code
            )
        )
        first.start()
        assert started("cap").wait(5)
        second = http.post("h", "runsync", json={"input": {"gate": "cap2"}})
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        gate("cap").set()
        first.join(5)
        assert results == [200]
        http.close()


def test_rate_limits_can_be_switched_off() -> None:
    for off in (False, RateLimits.off()):
        with Emulator({"e": echo}, rate_limits=off) as emu:
            http = Http(emu, key=None)
            assert all(http.post("e", "purge-queue").status_code == 200 for _ in range(10))
            http.close()


def test_rate_limits_must_be_the_rate_limits_type() -> None:
    with pytest.raises(TypeError, match=r"RateLimits\(limits=\{\.\.\.\}\)"):
        Emulator({"e": echo}, rate_limits={"run": OperationLimit(5, None)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per_worker_allowance must be >= 0"):
        Emulator({"e": echo}, per_worker_allowance=-1)


def test_purge_queue_limit_is_two_per_window() -> None:
    with Emulator({"e": echo}, clock="virtual") as emu:
        client = Http(emu, key=None)
        codes = [client.post("e", "purge-queue").status_code for _ in range(3)]
        emu.advance(10)
        codes.append(client.post("e", "purge-queue").status_code)
        client.close()
    assert codes == [200, 200, 429, 200]


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "wrong"}, {"Authorization": "Bearer"}],
)
def test_missing_or_wrong_key_gets_401_on_every_route(emu: Emulator, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=emu.base_url, headers=headers, verify=False) as client:
        for method, path in [
            ("POST", "/echo/run"),
            ("GET", "/echo/status/x"),
            ("GET", "/echo/health"),
            ("POST", "/echo/purge-queue"),
            ("POST", "/echo/cancel/x"),
        ]:
            response = client.request(method, path, json={"input": {}})
            assert response.status_code == 401, path
            assert KEY not in response.text and "API key" in response.json()["error"]


def test_a_stranger_learns_no_endpoint_ids(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.base_url, verify=False) as client:
        response = client.post("/nope/run", json={"input": {}})
        assert response.status_code == 401 and "echo" not in response.text
        keyed = client.post("/nope/run", json={"input": {}}, headers={"Authorization": KEY})
        assert keyed.status_code == 404 and "echo" in keyed.json()["error"]  # the key holder is helped


@pytest.mark.parametrize("value", [f"Bearer {KEY}", KEY, f"bearer {KEY}"])
def test_bearer_and_bare_keys_are_accepted(emu: Emulator, value: str) -> None:
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": value}, verify=False) as client:
        assert client.get("/echo/health").status_code == 200


def test_without_a_key_configured_any_key_is_accepted() -> None:
    with Emulator({"e": echo}) as emu, httpx.Client(base_url=emu.base_url, verify=False) as client:
        assert client.get("/e/health").status_code == 200
        assert client.get("/e/health", headers={"Authorization": "Bearer anything"}).status_code == 200


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,needle",
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"prompt": "hi"}', '"input" is required'),
        (b'{"webhook": "http://x"}', '"input" is required'),
        (b'{"input": "hi"}', '"input" must be a JSON object'),
        (b'{"input": null}', '"input" must be a JSON object'),
        (b'{"input": {}, "policy": 5}', '"policy" must be a JSON object'),
        (b'{"input": {}, "policy": {"ttl": "600000"}}', "policy.ttl must be an integer"),
        (b'{"input": {}, "policy": {"ttl": 9999}}', "policy.ttl=9999 is out of range"),
        (b'{"input": {}, "policy": {"ttl": 604800001}}', "out of range"),
        (
            b'{"input": {}, "policy": {"executionTimeout": 4999}}',
            "policy.executionTimeout=4999 is out of range",
        ),
        (b'{"input": {}, "policy": {"executionTimeout": true}}', "must be an integer"),
        (b'{"input": {}, "policy": {"executionTimeout": 5000.5}}', "must be an integer"),
        (b'{"input": {}, "policy": {"lowPriority": "yes"}}', "lowPriority must be true or false"),
        (b'{"input": {}, "webhook": 12}', '"webhook" must be an http(s) URL'),
        (b'{"input": {}, "webhook": "ftp://x"}', '"webhook" must be an http(s) URL'),
        (b'{"input": {}, "webhook": "https://[::1"}', '"webhook" is not a valid URL'),
        (b'{"input": {}, "webhook": "http:///hook"}', '"webhook" has no host'),
        (b'{"input": {}, "s3Config": {"accessId": "a"}}', "s3Config needs non-empty strings"),
        (b'{"input": {}, "s3Config": []}', '"s3Config" must be a JSON object'),
    ],
)
def test_bad_bodies_get_400_naming_the_problem(http: Http, body: bytes, needle: str) -> None:
    for route in ("run", "runsync"):
        response = http.post("echo", route, content=body)
        assert response.status_code == 400, response.text
        assert needle in response.json()["error"]
    assert http.health("echo")["jobs"]["inQueue"] == 0


@pytest.mark.parametrize("route", ["run", "runsync"])
def test_a_body_nested_past_128_levels_is_a_400_naming_the_limit(http: Http, route: str) -> None:
    # 1,000 levels once made GET /_emulator/jobs a plain-text 500 for the job's whole retention.
    for levels in (130, 1000):
        deep = b'{"input": ' + b'{"a": ' * levels + b"1" + b"}" * levels + b"}"
        response = http.post("echo", route, content=deep)
        assert response.status_code == 400, response.text
        assert "nested more than 128 levels" in response.json()["error"]
    # 128 levels, the body itself counted, is accepted and listed.
    fits = b'{"input": ' + b'{"a": ' * 126 + b"1" + b"}" * 126 + b"}"
    assert http.post("echo", route, content=fits, params={"wait": "1000"}).status_code == 200
    listing = http.control("jobs", method="GET")
    assert listing.status_code == 200 and listing.json()["jobs"]


def test_a_body_whose_brackets_sit_in_strings_is_not_refused(http: Http) -> None:
    text = "[" * 5000  # counted by the cheap pre-check, yet only 2 levels deep
    job_id = http.run("echo", {"text": text})
    assert job_id


@pytest.mark.parametrize(
    "route,params,needle",
    [
        ("runsync", {"wait": "soon"}, "must be an integer"),
        ("runsync", {"wait": "999"}, "out of range"),
        ("runsync", {"wait": "300001"}, "out of range"),
    ],
)
def test_bad_query_parameters_get_400(http: Http, route: str, params: dict[str, str], needle: str) -> None:
    response = http.post("echo", route, params=params, json={"input": {}})
    assert response.status_code == 400 and needle in response.json()["error"]


def test_bad_status_query_parameters_get_400(http: Http) -> None:
    job_id = http.run("echo", {})
    assert http.get("echo", f"status/{job_id}", params={"ttl": "-5"}).status_code == 400
    assert http.get("echo", f"stream/{job_id}", params={"wait": "x"}).status_code == 400
    assert http.get("echo", f"stream/{job_id}", params={"wait": "999"}).status_code == 400
    assert http.get("echo", f"status-sync/{job_id}", params={"wait": "400000"}).status_code == 400


@pytest.mark.parametrize("route", ["status", "status-sync", "stream", "cancel", "retry"])
def test_unknown_job_ids_get_404(http: Http, route: str) -> None:
    method = "GET" if route in ("status", "status-sync", "stream") else "POST"
    response = http.client.request(method, f"/echo/{route}/no-such-job")
    assert response.status_code == 404
    assert "no-such-job" in response.json()["error"]


def test_garbage_never_gets_a_500(http: Http) -> None:
    """Seeded random bodies, queries and ids: always a 4xx with an error message, never a 500 or a hang."""
    import json
    import random

    rng = random.Random(1234)
    pieces = [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"input"',
        b":",
        b",",
        b"null",
        b"1e999",
        b'"\xff"',
        b"\x00",
        b'{"a":',
        b'"policy"',
        b'{"ttl": -1}',
        b'"s3Config"',
        b"true",
        b'"webhook"',
        b"9" * 30,
    ]
    values: list[object] = [None, True, 0, -1, 1.5, 10**30, "", "x" * 50, [], [1], {}, {"k": None}]
    for _ in range(150):
        if rng.random() < 0.5:
            body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        else:
            doc = {
                k: rng.choice(values) for k in rng.sample(["input", "policy", "webhook", "s3Config", "x"], 3)
            }
            if isinstance(doc.get("policy"), dict) or rng.random() < 0.3:
                doc["policy"] = {k: rng.choice(values) for k in ("ttl", "executionTimeout", "lowPriority")}
            body = json.dumps(doc).encode()
        route = rng.choice(["run", "runsync"])
        params = {"wait": rng.choice(["", "x", "-1", "1000", "99999999"])} if route == "runsync" else {}
        response = http.post("idle", route, content=body, params=params)
        assert response.status_code in (200, 400), (body, response.status_code, response.text)
        assert response.status_code == 200 or response.json()["error"]
    for job_id in ["%00", "..", "a" * 500, "sync-", "\u2603"]:
        assert http.get("echo", f"status/{job_id}").status_code == 404
    http.post("idle", "purge-queue")


def _deep_output(job: dict[str, Any]) -> Any:
    value: Any = 1
    for _ in range(job["input"]["levels"]):
        value = [value]
    return value


def test_a_job_too_deep_to_list_still_lets_the_listing_answer() -> None:
    # An output 254 levels deep encodes alone (orjson's limit) but not inside the listing: the job is
    # listed with a note instead, and the route answers 200, not a plain-text 500.
    with Emulator({"deep": _deep_output}) as emu:
        answer = httpx.post(f"{emu.base_url}/deep/runsync", json={"input": {"levels": 254}})
        assert answer.json()["status"] == "COMPLETED"
        listing = httpx.get(f"{emu.root_url}/_emulator/jobs")
        assert listing.status_code == 200
        (job,) = listing.json()["jobs"]
        assert job["status"] == "COMPLETED" and "nested too deep" in job["output"]
