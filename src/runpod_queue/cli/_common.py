"""Compatibility re-exports: the names ``batch``, ``serve`` and ``worker_env`` imported from here before the
CLI's shared code was split into one module per concept. New code imports from those modules:

- ``_options``: the shared typer options (``ApiKeyOpt``, ``LocalOpt``, ``duration_option``, ...);
- ``_argv``: ``RpqCommand`` (a bare ``--local``);
- ``_input``: ``parse_input`` (INPUT as JSON, ``@file``, ``-``);
- ``_render``: ``Printer``, ``Progress``, ``exit_code_for``;
- ``_session``: ``session``, ``Session``, ``resolve``, ``configure_debug_logging``, ``local_base_url``;
- ``_errors``: ``UsageProblem``; ``_app``: the exit codes.
"""

from __future__ import annotations

from runpod_queue.cli._app import EXIT_API, EXIT_INTERRUPTED, EXIT_JOB, EXIT_OK, EXIT_USAGE
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._input import parse_input
from runpod_queue.cli._options import DEFAULT_LOCAL_PORT, ApiKeyOpt, BaseUrlOpt, DebugOpt, JsonOpt, LocalOpt
from runpod_queue.cli._render import exit_code_for
from runpod_queue.cli._session import Session, local_base_url, session
from runpod_queue.cli._session import configure_debug_logging as _configure_debug_logging
from runpod_queue.cli._session import resolve as _resolve

__all__ = [
    "DEFAULT_LOCAL_PORT",
    "EXIT_API",
    "EXIT_INTERRUPTED",
    "EXIT_JOB",
    "EXIT_OK",
    "EXIT_USAGE",
    "ApiKeyOpt",
    "BaseUrlOpt",
    "DebugOpt",
    "JsonOpt",
    "LocalOpt",
    "RpqCommand",
    "Session",
    "UsageProblem",
    "_configure_debug_logging",
    "_resolve",
    "exit_code_for",
    "local_base_url",
    "parse_input",
    "session",
]
