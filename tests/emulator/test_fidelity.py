"""Where the emulator follows RunPod's leniency (unknown request keys, results over 20 MB) but warns."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runpod_queue import Client, JobStatus
from runpod_queue.emulator import Emulator

# What RunPod's JS SDK sends for a job (endpoint.run): `webhookV2` at the top level and `objectPath`
# inside `s3Config`, neither of them in RunPod's documented request schema. The Go SDK sends the same.
JS_SDK_BODY: dict[str, Any] = {
    "input": {"prompt": "hi"},
    "webhook": "http://127.0.0.1:9/hook",
    "webhookV2": "http://127.0.0.1:9/hook-v2",
    "policy": {"executionTimeout": 60_000, "ttl": 600_000},
    "s3Config": {
        "accessId": "AKIA-test",
        "accessSecret": "secret-test",
        "bucketName": "bucket",
        "endpointUrl": "https://s3.example.invalid",
        "objectPath": "results/",
    },
}


def echo(job: dict[str, Any]) -> Any:
    return {"echo": job["input"], "s3": sorted(job.get("s3Config", {}))}


def big(job: dict[str, Any]) -> Any:
    return "x" * job["input"]["size"]


@pytest.fixture(scope="module")
def lenient() -> Iterator[Emulator]:
    with Emulator({"e": echo, "big": big}, clock="virtual") as emu:
        yield emu


def test_the_js_sdk_request_shape_is_accepted_with_a_warning(
    lenient: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "runpod_queue.emulator")
    with httpx.Client(base_url=lenient.base_url) as http:
        answer = http.post("/e/runsync", json=JS_SDK_BODY)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "COMPLETED"
    # The known fields took effect; the unknown ones were dropped before the handler saw the job.
    assert body["output"] == {
        "echo": {"prompt": "hi"},
        "s3": ["accessId", "accessSecret", "bucketName", "endpointUrl"],
    }
    header = answer.headers["x-rpq-warning"]
    assert "webhookV2" in header and "s3Config.objectPath" in header
    assert any("webhookV2" in w and "s3Config.objectPath" in w for w in lenient.warnings)
    assert any("webhookV2" in r.getMessage() for r in caplog.records)  # what `rpq serve` prints
    # The secret in s3Config is never part of a warning.
    assert not any("secret-test" in w for w in lenient.warnings)


def test_a_known_body_carries_no_warning_and_a_misspelt_policy_key_is_named(lenient: Emulator) -> None:
    with httpx.Client(base_url=lenient.base_url) as http:
        clean = http.post("/e/run", json={"input": {}})
        typo = http.post("/e/run", json={"input": {}, "policy": {"execution_timeout": 6000}})
    assert clean.status_code == 200 and "x-rpq-warning" not in clean.headers
    assert typo.status_code == 200 and "policy.execution_timeout" in typo.headers["x-rpq-warning"]


@pytest.mark.parametrize(
    "body,needle",
    [
        ({"input": "hi", "extra": 1}, '"input" must be a JSON object'),
        ({"input": {}, "extra": 1, "policy": {"ttl": 5}}, "policy.ttl=5 is out of range"),
    ],
)
def test_type_errors_in_known_fields_stay_400s(lenient: Emulator, body: dict[str, Any], needle: str) -> None:
    with httpx.Client(base_url=lenient.base_url) as http:
        answer = http.post("/e/run", json=body)
    assert answer.status_code == 400 and needle in answer.json()["error"]


def test_strict_mode_refuses_the_js_sdk_shape() -> None:
    with (
        Emulator({"e": echo}, clock="virtual", strict=True) as emu,
        httpx.Client(base_url=emu.base_url) as http,
    ):
        answer = http.post("/e/run", json=JS_SDK_BODY)
        assert answer.status_code == 400
        assert "webhookV2" in answer.json()["error"] and "strict" in answer.json()["error"]
        nested = http.post("/e/run", json={"input": {}, "s3Config": JS_SDK_BODY["s3Config"]})
        assert nested.status_code == 400 and "s3Config.objectPath" in nested.json()["error"]
        assert http.get("/e/health").json()["jobs"]["inQueue"] == 0
        assert emu.warnings == []


def test_an_in_process_result_over_20_mb_ends_completed_without_output(lenient: Emulator) -> None:
    with Client("any", base_url=lenient.base_url) as client:
        job = client.endpoint("big").run_sync({"size": 20_000_100})
        small = client.endpoint("big").run_sync({"size": 10})
    assert job.status is JobStatus.COMPLETED and job.output is None
    assert small.output == "x" * 10
    with httpx.Client(base_url=lenient.base_url) as http:
        answer = http.get(f"/big/status/{job.id}")
    assert "output" not in answer.json()
    warning = answer.headers["x-rpq-warning"]
    assert "20 MB" in warning and "s3Config" in warning and job.id in warning
    assert warning in lenient.warnings


def test_many_or_long_unknown_keys_make_a_short_header_and_one_log_line(
    lenient: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "runpod_queue.emulator")
    body: dict[str, Any] = {"input": {}, **{f"extra{n:02d}": n for n in range(30)}, "k" * 500: 1}
    with httpx.Client(base_url=lenient.base_url) as http:
        first = http.post("/e/run", json=body)
        second = http.post("/e/run", json=body)
    assert first.status_code == second.status_code == 200
    header = first.headers["x-rpq-warning"]
    assert "extra09" in header and "extra10" not in header and "and 21 more" in header
    assert len(header) < 400
    logged = [r for r in caplog.records if "extra00" in r.getMessage()]
    assert len(logged) == 1  # the same warning again is not logged again
