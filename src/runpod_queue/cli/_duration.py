"""The one CLI spelling of a duration: ``500ms``, ``30s``, ``10m``, ``2h``, ``7d``; a bare number is seconds.

Every duration option parses through ``duration`` so they all accept the same text and fail (exit 2) with
the same message.
"""

from __future__ import annotations

import typer

from runpod_queue._units import parse_duration

__all__ = ["DURATION_METAVAR", "duration"]

DURATION_METAVAR = "DURATION"


def duration(text: str | float) -> float:
    """Typer ``parser=`` for duration options: seconds as float, or a usage error naming the forms."""
    if isinstance(text, int | float):  # a default value, already seconds
        return float(text)
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
