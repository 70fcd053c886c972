"""An async handler that never awaits: it holds the emulator's event loop for an hour."""

import time
from typing import Any


async def handler(job: dict[str, Any]) -> Any:
    time.sleep(3600)  # noqa: ASYNC251 - blocking on purpose: the loop answers nothing meanwhile
    return {}
