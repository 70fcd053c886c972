"""`GET /_emulator/jobs` and `/_emulator/requests`: the same introspection over HTTP, for test suites in
other languages driving `rpq serve --clock virtual`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runpod_queue.emulator import Emulator
from shared_support import echo

pytestmark = pytest.mark.timeout(30)

KEY = "control-key"


def fail(job: dict[str, Any]) -> Any:
    raise ValueError("no")


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with (
        Emulator({"echo": echo, "fail": fail}, api_key=KEY, clock="virtual") as emu,
        httpx.Client(base_url=emu.root_url, headers={"authorization": f"Bearer {KEY}"}) as client,
    ):
        yield client


def test_jobs_and_requests_over_http(http: httpx.Client) -> None:
    assert http.delete("/_emulator/requests").json() == {"requests": []}
    done = http.post("/v2/echo/runsync", json={"input": {"a": 1}}).json()
    failed = http.post("/v2/fail/runsync", json={"input": {}}).json()
    http.get("/v2/echo/status/nope")
    jobs = http.get("/_emulator/jobs", params={"endpoint": "echo"}).json()["jobs"]
    assert [(j["id"], j["status"], j["input"], j["output"], j["attempts"]) for j in jobs] == [
        (done["id"], "COMPLETED", {"a": 1}, {"a": 1}, 1)
    ]
    everything = http.get("/_emulator/jobs").json()["jobs"]
    assert {j["id"]: j["status"] for j in everything}[failed["id"]] == "FAILED"
    assert "ValueError" in {j["id"]: j["error"] for j in everything}[failed["id"]]
    requests = http.get("/_emulator/requests").json()["requests"]
    assert [(r["method"], r["path"], r["status"], r["operation"]) for r in requests] == [
        ("POST", "/v2/echo/runsync", 200, "runsync"),
        ("POST", "/v2/fail/runsync", 200, "runsync"),
        ("GET", "/v2/echo/status/nope", 404, "status"),
    ]
    with_control = http.get("/_emulator/requests", params={"all": "true"}).json()["requests"]
    assert any(r["path"] == "/_emulator/jobs" for r in with_control)
    assert http.post("/_emulator/advance", json={"seconds": 60}).json() == {"now": 60}


def test_bad_queries_say_what_to_send(http: httpx.Client) -> None:
    r = http.get("/_emulator/jobs", params={"endpoint": "nope"})
    assert r.status_code == 404 and "serves: echo, fail" in r.json()["error"]
    r = http.get("/_emulator/requests", params={"all": "maybe"})
    assert r.status_code == 400 and "true or false" in r.json()["error"]
    assert http.get("/_emulator/jobs", headers={"authorization": "Bearer wrong"}).status_code == 401


def test_rpq_serve_gives_another_languages_suite_the_same_powers(tmp_path: Path) -> None:
    handler = tmp_path / "shout.py"
    handler.write_text("def handler(job):\n    return job['input']['text'].upper()\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runpod_queue.cli",
            "serve",
            f"shout={handler}",
            "--clock",
            "virtual",
            "--port",
            "0",
            "--workers",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"(http://127\.0\.0\.1:\d+)/v2", proc.stdout.readline())
        assert match
        root = match.group(1)
        with httpx.Client(base_url=root) as http:  # what a Node or PHP suite would send
            job_id = http.post("/v2/shout/run", json={"input": {"text": "hi"}}).json()["id"]
            assert http.post("/_emulator/advance", json={"seconds": 86_400}).json() == {"now": 86_400}
            (job,) = http.get("/_emulator/jobs").json()["jobs"]
            assert (job["id"], job["status"], job["input"]) == (job_id, "TIMED_OUT", {"text": "hi"})
            paths = [
                (r["method"], r["operation"], r["status"])
                for r in http.get("/_emulator/requests").json()["requests"]
            ]
            assert paths == [("POST", "run", 200)]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
