"""Durations: seconds (a number or a ``timedelta``) everywhere in Python, milliseconds only on the wire.

Every public argument that is a duration goes through ``seconds()``, so each one accepts the same
spellings and fails with the same message naming its unit; ``to_ms`` turns seconds into RunPod's integer
milliseconds at the last moment; ``parse_duration`` reads the CLI's ``500ms`` / ``30s`` / ``10m`` /
``2h`` / ``7d`` (a bare number is seconds).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Final

__all__ = ["Duration", "parse_duration", "seconds", "to_ms"]

Duration = float | int | timedelta

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)


def seconds(value: object, name: str, *, low: float | None = 0.0, high: float | None = None) -> float:
    """``value`` as float seconds, checked against [low, high]; ``ValueError``/``TypeError`` name ``name``
    and the unit."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds or a datetime.timedelta, got {type(value).__name__}"
        )
    else:
        result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if low is not None and result < low:
        raise ValueError(f"{name} must be at least {_show(low)} seconds, got {_show(result)}")
    if high is not None and result > high:
        raise ValueError(f"{name} must be at most {_show(high)} seconds, got {_show(result)}")
    return result


def to_ms(value: float) -> int:
    """Seconds to RunPod's integer milliseconds (rounded to the nearest one)."""
    return round(value * 1000)


def parse_duration(text: str) -> float:
    """``"500ms"``, ``"30s"``, ``"10m"``, ``"2h"``, ``"7d"`` or a bare number of seconds → float seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use a number of seconds or one with a unit "
            "(500ms, 30s, 10m, 2h, 7d)"
        )
    number, unit = match.groups()
    return float(number) * _UNITS[(unit or "s").lower()]


def _show(value: float) -> str:
    return f"{value:g}"
