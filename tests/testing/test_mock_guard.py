"""While a mock is active no name lookup for api.runpod.ai leaves the process, whatever resolves it:
each resolver entry point is replaced by a recorder *before* the mock starts (so a lookup that got past
the mock would be recorded, and refused, never sent), and the tests assert the recorders saw no RunPod
host. The covered list is the one in `runpod_queue.testing._intercept`'s docstring."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import aiodns
import aiohttp
import httpx
import pytest
import requests
import uvloop

from runpod_queue.testing import mock_runpod
from shared_support import echo

pytestmark = pytest.mark.timeout(30)

RUNPOD_NAMES = ("api.runpod.ai", "api.runpod.ai.", "API.RunPod.AI.")


def is_runpod(host: Any) -> bool:
    name = host.decode() if isinstance(host, bytes) else host
    return isinstance(name, str) and name.lower().rstrip(".") == "api.runpod.ai"


class Lookups:
    """Hosts the recorders were asked to resolve."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def runpod(self) -> list[str]:
        return [h for h in self.hosts if h.lower().rstrip(".") == "api.runpod.ai"]

    def record(self, host: Any) -> OSError:
        self.hosts.append(host.decode() if isinstance(host, bytes) else str(host))
        return socket.gaierror(socket.EAI_NONAME, "recorded, never sent")


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lookups]:
    seen = Lookups()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if is_runpod(host):
            raise seen.record(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    base = uvloop.Loop.__mro__[1]  # the Cython loop: the real lookups and connects

    async def loop_getaddrinfo(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
        if is_runpod(host):
            raise seen.record(host)
        return await base.getaddrinfo(self, host, *args, **kwargs)

    async def create_connection(self: Any, factory: Any, host: Any = None, *args: Any, **kwargs: Any) -> Any:
        if is_runpod(host):
            raise seen.record(host)
        return await base.create_connection(self, factory, host, *args, **kwargs)

    monkeypatch.setattr(uvloop.Loop, "getaddrinfo", loop_getaddrinfo, raising=False)
    monkeypatch.setattr(uvloop.Loop, "create_connection", create_connection, raising=False)

    def dns(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
        raise seen.record(host)

    for name in ("query", "query_dns", "getaddrinfo", "gethostbyname"):
        monkeypatch.setattr(aiodns.DNSResolver, name, dns)
    yield seen


@pytest.mark.parametrize("host", RUNPOD_NAMES)
def test_a_trailing_dot_or_capitals_are_rerouted_by_every_library(lookups: Lookups, host: str) -> None:
    url = f"https://{host}/v2/ep/runsync"
    with mock_runpod({"ep": echo}) as emu:
        assert requests.post(url, json={"input": {"a": 1}}, timeout=10).json()["output"] == {"a": 1}
        assert httpx.post(url, json={"input": {"a": 2}}).json()["output"] == {"a": 2}
    assert len(emu.requests) == 2
    assert lookups.runpod() == []


@pytest.mark.parametrize("host", RUNPOD_NAMES)
def test_aiohttp_with_aiodns_on_uvloop_sends_no_lookup(lookups: Lookups, host: str) -> None:
    async def main() -> int:
        resolver = aiohttp.AsyncResolver()
        connector = aiohttp.TCPConnector(resolver=resolver)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"https://{host}/v2/ep/health") as r,
        ):
            return r.status

    with mock_runpod({"ep": echo}):
        assert uvloop.run(main()) == 200
    assert lookups.runpod() == []


@pytest.mark.parametrize("host", RUNPOD_NAMES)
def test_raw_uvloop_and_aiodns_lookups_are_refused_by_the_mock(lookups: Lookups, host: str) -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        refusals = []
        with pytest.raises(OSError) as lookup:
            await loop.getaddrinfo(host, 443)
        refusals.append(str(lookup.value))
        with pytest.raises(OSError) as connect:
            await loop.create_connection(asyncio.Protocol, host, 443)
        refusals.append(str(connect.value))
        with pytest.raises(OSError) as dns:
            await aiodns.DNSResolver().query(host, "A")
        refusals.append(str(dns.value))
        with pytest.raises(OSError) as resolved:
            await aiohttp.AsyncResolver().resolve(host, 443)
        refusals.append(str(resolved.value))
        return refusals

    with mock_runpod({"ep": echo}):
        refusals = uvloop.run(main())
    assert all("mock_runpod blocks" in message for message in refusals), refusals
    assert lookups.runpod() == []


def test_outside_a_mock_lookups_are_left_alone(lookups: Lookups) -> None:
    # The recorders see the lookup: the guard is gone once the mock is.
    with mock_runpod({"ep": echo}):
        pass

    async def main() -> None:
        await asyncio.get_running_loop().getaddrinfo("api.runpod.ai", 443)

    with pytest.raises(OSError, match="recorded, never sent"):
        uvloop.run(main())
    assert lookups.runpod() == ["api.runpod.ai"]
