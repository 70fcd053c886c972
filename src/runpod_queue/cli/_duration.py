"""The one CLI spelling of a duration: ``500ms``, ``30s``, ``10m``, ``2h``, ``7d``; a bare number is seconds.

Every duration option parses through ``duration`` so they all accept the same text and fail (exit 2) with
the same message; ``within`` checks a parsed value's range with a message naming the option and the unit.
"""

from __future__ import annotations

from typing import overload

import typer

from runpod_queue._units import parse_duration, seconds
from runpod_queue.cli._errors import UsageProblem

__all__ = ["DURATION_METAVAR", "duration", "within"]

DURATION_METAVAR = "DURATION"


def duration(text: str | float) -> float:
    """Typer ``parser=`` for duration options: seconds as float, or a usage error naming the forms."""
    if isinstance(text, int | float):  # a default value, already seconds
        return float(text)
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@overload
def within(value: float, option: str, *, low: float = 0.0, high: float | None = None) -> float: ...
@overload
def within(value: None, option: str, *, low: float = 0.0, high: float | None = None) -> None: ...
def within(value: float | None, option: str, *, low: float = 0.0, high: float | None = None) -> float | None:
    """``value`` unchanged if in [low, high], else a usage error such as
    ``--interval must be at least 0.1 seconds, got 0.01``."""
    if value is None:
        return None
    try:
        return seconds(value, option, low=low, high=high)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
