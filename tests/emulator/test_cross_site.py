"""A keyless emulator refuses what a web page could send it: cross-site requests (Origin, Sec-Fetch-Site)
and POST bodies that are not JSON (what a form or a no-preflight `fetch` sends); it answers no CORS.
Clients outside a browser, the official SDK and the official worker's form-encoded posts keep working."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from runpod_queue.emulator import Emulator
from shared_support import echo

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def keyless() -> Iterator[tuple[Emulator, httpx.Client]]:
    with (
        Emulator({"ep": echo}, clock="virtual") as emu,
        httpx.Client(base_url=emu.root_url, timeout=10) as http,
    ):
        yield emu, http


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None],
)
def test_a_post_body_that_is_not_json_is_refused(
    keyless: tuple[Emulator, httpx.Client], content_type: str | None
) -> None:
    emu, http = keyless
    headers = {} if content_type is None else {"content-type": content_type}
    before = len(emu.jobs("ep"))
    answer = http.post("/v2/ep/run", content=b'{"input": {}}', headers=headers)
    assert answer.status_code == 415
    assert "Content-Type: application/json" in answer.json()["error"]
    assert len(emu.jobs("ep")) == before  # nothing was queued
    moved = http.post("/_emulator/advance", content=b'{"seconds": 5}', headers=headers)
    assert moved.status_code == 415
    assert emu.clock.now() == 0  # nor was the clock moved


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},  # a sandboxed frame or a file:// page
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},  # another port of localhost: another dev server's page
    ],
    ids=["origin", "null-origin", "cross-site", "same-site"],
)
@pytest.mark.parametrize(
    "method,path", [("POST", "/v2/ep/run"), ("GET", "/_emulator/jobs"), ("GET", "/v2/ep/health")]
)
def test_a_request_from_another_site_is_refused(
    keyless: tuple[Emulator, httpx.Client], headers: dict[str, str], method: str, path: str
) -> None:
    _, http = keyless
    body = b'{"input": {}}' if method == "POST" else None
    answer = http.request(method, path, content=body, headers={**JSON, **headers})
    assert answer.status_code == 403
    assert "refused" in answer.json()["error"] and "--api-key" in answer.json()["error"]
    assert not any(name.lower().startswith("access-control-") for name in answer.headers)


def test_its_own_pages_and_plain_clients_are_served(keyless: tuple[Emulator, httpx.Client]) -> None:
    emu, http = keyless
    own = {"origin": emu.root_url, "sec-fetch-site": "same-origin", **JSON}
    assert http.post("/v2/ep/run", content=b'{"input": {}}', headers=own).status_code == 200
    assert http.get("/_emulator/jobs", headers={"sec-fetch-site": "none"}).status_code == 200
    assert http.post("/v2/ep/run", json={"input": {}}).status_code == 200  # httpx labels JSON itself
    # Bodyless POSTs need no Content-Type (aiohttp even labels them application/octet-stream).
    answer = http.post("/v2/ep/purge-queue", headers={"content-type": "application/octet-stream"})
    assert answer.status_code == 200


def test_no_cors_answer_to_a_preflight(keyless: tuple[Emulator, httpx.Client]) -> None:
    _, http = keyless
    answer = http.options(
        "/v2/ep/run",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert answer.status_code >= 400
    assert not any(name.lower().startswith("access-control-") for name in answer.headers)


def test_the_official_workers_form_encoded_posts_are_accepted() -> None:
    # runpod-python's rp_http posts results as application/x-www-form-urlencoded with a JSON body.
    from runpod_queue.emulator import EndpointSpec

    with (
        Emulator({"ext": EndpointSpec(handler=None)}, clock="virtual") as emu,
        httpx.Client(base_url=emu.base_url, timeout=10) as http,
    ):
        job = http.post("/ext/run", json={"input": {"n": 1}}).json()["id"]
        taken = http.get("/ext/job-take/w1", params={"job_in_progress": "0"})
        assert taken.json()["id"] == job
        done = http.post(
            f"/ext/job-done/w1/{job}",
            params={"isStream": "false"},
            content=b'{"output": {"ok": true}}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200
        assert http.get(f"/ext/status/{job}").json()["status"] == "COMPLETED"


def test_a_keyed_emulator_keeps_accepting_any_content_type() -> None:
    with Emulator({"ep": echo}, api_key="k", clock="virtual") as emu, httpx.Client(timeout=10) as http:
        answer = http.post(
            f"{emu.base_url}/ep/run",
            content=b'{"input": {}}',
            headers={"authorization": "Bearer k", "content-type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200
