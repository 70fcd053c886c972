"""The options every endpoint command shares (connection and output), and how a duration option is declared.

Declared once as ``Annotated`` types so each command lists them last (``rpq status EP JOB --json``) with the
same names, help and panels.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from runpod_queue._contract import DEFAULT_BASE_URL
from runpod_queue._settings import ENV_API_KEY, ENV_BASE_URL
from runpod_queue.cli._duration import DURATION_METAVAR, duration

__all__ = [
    "DEFAULT_LOCAL_PORT",
    "DURATIONS_HELP",
    "ApiKeyOpt",
    "BaseUrlOpt",
    "DebugOpt",
    "JsonOpt",
    "LocalOpt",
    "duration_option",
]

DEFAULT_LOCAL_PORT = 8000  # where `rpq serve` listens by default

CONNECTION_PANEL = "Connection"
OUTPUT_PANEL = "Output"

# The epilog of every command with a duration option: the forms, said once instead of on each option.
DURATIONS_HELP = "DURATION: 500ms, 30s, 10m, 2h or 7d; a bare number is seconds."

ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        help=f"RunPod API key (default: ${ENV_API_KEY}). Prefer the variable: a command line is visible "
        "to every user of the machine (ps). Never printed.",
        show_default=False,
        rich_help_panel=CONNECTION_PANEL,
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        metavar="URL",
        help=f"API base URL (default: ${ENV_BASE_URL}, else {DEFAULT_BASE_URL}).",
        show_default=False,
        rich_help_panel=CONNECTION_PANEL,
    ),
]
LocalOpt = Annotated[
    int | None,
    typer.Option(
        "--local",
        metavar="[PORT]",
        min=1,
        max=65535,
        help=f"Talk to a local emulator at http://127.0.0.1:PORT/v2 (PORT defaults to {DEFAULT_LOCAL_PORT}, "
        "where `rpq serve` listens); overrides --base-url.",
        show_default=False,
        rich_help_panel=CONNECTION_PANEL,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print exactly RunPod's JSON answer on stdout (for scripts).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
DebugOpt = Annotated[
    bool,
    typer.Option(
        "--debug", help="Log every request to stderr and show tracebacks.", rich_help_panel=OUTPUT_PANEL
    ),
]


def duration_option(*names: str, help: str, **kwargs: Any) -> Any:
    """A typer option read by the one duration parser (``500ms`` … ``7d``; a bare number is seconds).

    A default belongs in ``help`` as a duration (``default 2s``): click would show the parameter's
    seconds, or a custom text in parentheses. Ranges are checked by the command with ``within`` so the
    message names the option and the unit.
    """
    return typer.Option(
        *names, parser=duration, metavar=DURATION_METAVAR, help=help, show_default=False, **kwargs
    )
