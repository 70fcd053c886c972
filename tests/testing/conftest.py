"""Async tests here run under anyio's pytest plugin, on asyncio (the event loop our clients need)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
