"""The smallest handler: returns its input. `rpq serve examples/echo.py` serves it as endpoint `echo`."""

from typing import Any


def handler(job: dict[str, Any]) -> Any:
    return job["input"]
