"""Fixtures: `emu` (tests/conftest.py) over real loopback HTTP, and one `api` that is the sync or the async
client.

Every operation test takes `api` (or `connect`), parametrized over both variants, so the sync and async
clients are held to the same test body and cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from client_support import API_KEY, EMU, Api, AsyncApi, Portal, SyncApi, set_faults

from runpod_queue import Retries
from runpod_queue.emulator import Emulator, Faults
from shared_support import EmuSetup


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return EMU


@pytest.fixture
def faults(emu: Emulator) -> Iterator[Callable[[Faults], None]]:
    yield lambda f: set_faults(emu, f)
    set_faults(emu, Faults())


_idle_ids = iter(f"idle{i}" for i in range(40))


@pytest.fixture
def idle() -> str:
    """A worker-less endpoint no other test has used: its queue holds exactly what this test created."""
    return next(_idle_ids)


@pytest.fixture(scope="session")
def portal() -> Iterator[Portal]:
    p = Portal()
    yield p
    p.close()


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, portal: Portal) -> Iterator[Callable[..., Api]]:
    """Make a client of this test's variant; retries never wait (the no-waiting switch)."""
    made: list[Api] = []

    def make(**kwargs: Any) -> Api:
        kwargs.setdefault("retries", Retries(wait=False))
        api: Api = SyncApi(**kwargs) if request.param == "sync" else AsyncApi(portal, **kwargs)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def api(connect: Callable[..., Api], emu: Emulator) -> Api:
    return connect(api_key=API_KEY, base_url=emu.base_url)
