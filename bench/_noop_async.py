"""The async twin of _noop_worker.py: shows the emulator's cost without a handler-thread hand-off."""

from typing import Any


async def handler(job: dict[str, Any]) -> Any:
    return {"ok": True}
