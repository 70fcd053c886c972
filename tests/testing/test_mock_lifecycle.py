"""What `mock_runpod` changes and that it undoes all of it: environment, SDK globals, patches; nesting;
decorator use; other hosts untouched; nothing reaches the real api.runpod.ai."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests
import requests.adapters
import runpod

from runpod_queue import Client
from runpod_queue.emulator import Faults
from runpod_queue.testing import MOCK_API_KEY, mock_runpod
from shared_support import echo

pytestmark = pytest.mark.timeout(30)


def _patched_state() -> tuple[Any, ...]:
    return (
        httpx.HTTPTransport.handle_request,
        httpx.AsyncHTTPTransport.handle_async_request,
        requests.adapters.HTTPAdapter.send,
        aiohttp.ClientSession._build_url,
        socket.getaddrinfo,
        httpx2.HTTPTransport.handle_request,
        httpx2.AsyncHTTPTransport.handle_async_request,
    )


@pytest.fixture
def other_host() -> Iterator[str]:
    """A plain HTTP server on loopback: a host that is not RunPod's, which the mock must not touch."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"other")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_everything_restored_after_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "users-own-key")
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)
    before = _patched_state()
    sdk_before = (runpod.api_key, runpod.endpoint_url_base)
    with pytest.raises(RuntimeError, match="boom"), mock_runpod({"ep": echo}) as emu:
        assert os.environ["RUNPOD_API_KEY"] == MOCK_API_KEY
        assert os.environ["RUNPOD_ENDPOINT_BASE_URL"] == emu.base_url
        assert (runpod.api_key, runpod.endpoint_url_base) == (MOCK_API_KEY, emu.base_url)
        assert _patched_state() != before
        raise RuntimeError("boom")
    assert os.environ["RUNPOD_API_KEY"] == "users-own-key"
    assert "RUNPOD_ENDPOINT_BASE_URL" not in os.environ
    assert (runpod.api_key, runpod.endpoint_url_base) == sdk_before
    assert _patched_state() == before
    with pytest.raises(httpx.ConnectError):  # the emulator is gone
        httpx.get(emu.base_url + "/ep/health")


def test_other_hosts_untouched(other_host: str) -> None:
    with mock_runpod({"ep": echo}) as emu:
        assert requests.get(other_host, timeout=5).text == "other"
        assert httpx.get(other_host).text == "other"
    assert emu.requests == []


def test_nesting_routes_to_the_innermost_then_back() -> None:
    def outer_handler(job: dict[str, Any]) -> Any:
        return "outer"

    def inner_handler(job: dict[str, Any]) -> Any:
        return "inner"

    url = "https://api.runpod.ai/v2/ep/runsync"
    with mock_runpod({"ep": outer_handler}) as outer:
        assert requests.post(url, json={"input": {}}, timeout=10).json()["output"] == "outer"
        with mock_runpod({"ep": inner_handler}, api_key="inner-key") as inner:
            assert os.environ["RUNPOD_API_KEY"] == "inner-key"
            auth = {"Authorization": "Bearer inner-key"}
            answer = requests.post(url, json={"input": {}}, headers=auth, timeout=10)
            assert answer.json()["output"] == "inner"
            assert inner.base_url != outer.base_url
        assert os.environ["RUNPOD_ENDPOINT_BASE_URL"] == outer.base_url
        assert requests.post(url, json={"input": {}}, timeout=10).json()["output"] == "outer"


@mock_runpod({"ep": echo})
def test_decorator_on_a_sync_test() -> None:
    assert httpx.post("https://api.runpod.ai/v2/ep/runsync", json={"input": {"a": 1}}).json()["output"] == {
        "a": 1
    }


@pytest.mark.anyio
@mock_runpod({"ep": echo})
async def test_decorator_on_an_async_test() -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post("https://api.runpod.ai/v2/ep/runsync", json={"input": {"a": 2}})
    assert r.json()["output"] == {"a": 2}


@pytest.mark.anyio
async def test_async_with() -> None:
    async with mock_runpod({"ep": echo}) as emu, aiohttp.ClientSession() as session:
        async with session.get("https://api.runpod.ai/v2/ep/health") as r:
            assert r.status == 200
        assert [(q.method, q.operation, q.status_code) for q in emu.requests] == [("GET", "health", 200)]


def test_a_library_it_does_not_reroute_fails_instead_of_reaching_runpod() -> None:
    import urllib.request

    with mock_runpod({"ep": echo}), pytest.raises(OSError, match=r"mock_runpod blocks api\.runpod\.ai"):
        urllib.request.urlopen("https://api.runpod.ai/v2/ep/health", timeout=5)


def test_a_client_made_before_the_block_is_rerouted_too() -> None:
    # It resolved RunPod's URL at construction; its httpx transport is rerouted inside the block.
    client = Client(api_key="made-before")
    try:
        with mock_runpod({"ep": echo}) as emu:
            assert client.endpoint("ep").run_sync({"x": 1}).output == {"x": 1}
            assert emu.requests[-1].operation == "runsync"
    finally:
        client.close()


def test_faults_reach_the_app_and_show_in_requests() -> None:
    with mock_runpod({"ep": echo}) as emu:
        emu.set_faults(Faults(error_503=1.0))
        r = requests.get("https://api.runpod.ai/v2/ep/health", timeout=5)
        assert r.status_code == 503
        emu.set_faults(Faults(drop=1.0))
        with pytest.raises(requests.RequestException):  # the answer was cut mid-body
            requests.get("https://api.runpod.ai/v2/ep/health", timeout=5)
        emu.set_faults(Faults())
        assert [q.status_code for q in emu.requests] == [503, None]


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(TypeError, match="mapping of endpoint id to handler"):
        mock_runpod(["ep"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drop host= / port="):
        mock_runpod({"ep": echo}, port=8000)
    with pytest.raises(TypeError):
        mock_runpod({"ep": echo}, clok="virtual")
    with mock_runpod({"ep": echo}) as emu, pytest.raises(ValueError, match="not served by this emulator"):
        emu.jobs("nope")


def test_the_key_stays_out_of_reprs() -> None:
    with mock_runpod({"ep": echo}, api_key="sekrit-key-123") as emu:
        assert "sekrit" not in repr(emu)
        assert all("sekrit" not in repr(q) for q in emu.requests)


def test_without_the_emulator_extra_the_import_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    for name in ("runpod_queue.testing", "runpod_queue.emulator", "runpod_queue.emulator._server"):
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'runpod-queue\[emulator\]'"):
        importlib.import_module("runpod_queue.testing")


def test_mocks_that_exit_out_of_order_restore_what_was_there_before_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two threads' (or tasks') mocks: the first one entered exits first. Before the fix, the second's
    # exit put back the first's (dead) emulator URL and key.
    monkeypatch.setenv("RUNPOD_API_KEY", "users-own-key")
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)
    sdk_before = (runpod.api_key, runpod.endpoint_url_base)
    first, second = mock_runpod({"ep": echo}), mock_runpod({"ep": echo}, api_key="second-key")
    first_emu = first.__enter__()
    second_emu = second.__enter__()
    first.__exit__(None, None, None)
    # The one still active keeps the process: env, SDK and traffic.
    assert os.environ["RUNPOD_ENDPOINT_BASE_URL"] == second_emu.base_url
    assert os.environ["RUNPOD_API_KEY"] == "second-key"
    auth = {"Authorization": "Bearer second-key"}
    assert requests.get("https://api.runpod.ai/v2/ep/health", headers=auth, timeout=5).status_code == 200
    assert second_emu.requests and not first_emu.requests
    second.__exit__(None, None, None)
    assert os.environ["RUNPOD_API_KEY"] == "users-own-key"
    assert "RUNPOD_ENDPOINT_BASE_URL" not in os.environ
    assert (runpod.api_key, runpod.endpoint_url_base) == sdk_before


def test_newest_exiting_first_points_back_at_the_older_one() -> None:
    first, second = mock_runpod({"ep": echo}), mock_runpod({"ep": echo})
    with first as first_emu:
        second_emu = second.__enter__()
        assert os.environ["RUNPOD_ENDPOINT_BASE_URL"] == second_emu.base_url
        second.__exit__(None, None, None)
        assert os.environ["RUNPOD_ENDPOINT_BASE_URL"] == first_emu.base_url
        assert runpod.endpoint_url_base == first_emu.base_url


@pytest.mark.anyio
async def test_one_instance_entered_twice_is_refused_and_its_emulator_survives() -> None:
    # Before the fix, a second entry by another task started a second emulator, and the first task's
    # exit stopped the second task's emulator (the list popped the newest entry).
    mock = mock_runpod({"ep": echo})
    async with mock as emu:
        with pytest.raises(RuntimeError, match="already active"):
            async with mock:
                pass  # pragma: no cover - refused on entry
        async with httpx.AsyncClient() as client:
            r = await client.get("https://api.runpod.ai/v2/ep/health")
        assert r.status_code == 200
        assert os.environ["RUNPOD_ENDPOINT_BASE_URL"] == emu.base_url
    with mock as again:  # usable again once it exited
        assert again.base_url != emu.base_url


def test_a_decorated_function_may_run_in_two_threads_at_once() -> None:
    seen: list[str] = []
    both_inside = threading.Barrier(2, timeout=10)

    @mock_runpod({"ep": echo})
    def app() -> None:
        both_inside.wait()
        seen.append(os.environ["RUNPOD_ENDPOINT_BASE_URL"])
        both_inside.wait()

    threads = [threading.Thread(target=app) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(seen) == 2
    assert "RUNPOD_ENDPOINT_BASE_URL" not in os.environ or os.environ["RUNPOD_ENDPOINT_BASE_URL"] not in seen
