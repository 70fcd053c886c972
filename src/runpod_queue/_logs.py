"""Logging switched on from the environment: ``RUNPOD_QUEUE_LOG=debug`` (or ``info``), as openai-python's
``OPENAI_LOG``, so a user can see every request without touching the code that makes them.

The ``runpod_queue`` logger gets one stderr handler at that level. Nothing it logs carries the API key:
request lines name the method, the path and the status; the key only ever travels in a header.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Final

__all__ = ["ENV_LOG", "LOGGER_NAME", "debug_to_stderr", "setup_logging"]

ENV_LOG: Final = "RUNPOD_QUEUE_LOG"
LOGGER_NAME: Final = "runpod_queue"
_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO}
_FORMAT: Final = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, told apart from a handler the application added, so it is installed once."""


def _handler(logger: logging.Logger) -> _StderrHandler | None:
    return next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)


def setup_logging(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Read ``RUNPOD_QUEUE_LOG`` once, at import. Unset or empty: logging is left to the application."""
    value = environ.get(ENV_LOG, "").strip()
    if not value:
        return
    level = _LEVELS.get(value.lower())
    if level is None:
        # Import must not fail over a log setting: say what is wrong, once, and carry on without logs.
        sys.stderr.write(f"runpod_queue: {ENV_LOG}={value!r} is not a level; use debug or info (ignored)\n")
        return
    logger = logging.getLogger(LOGGER_NAME)
    if _handler(logger) is None:
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level)


def debug_to_stderr() -> logging.Handler | None:
    """``rpq --debug``: the request log on stderr at DEBUG. Returns the handler it added, for the caller
    to remove when done; None when ``RUNPOD_QUEUE_LOG`` already installed one (no line twice)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    if _handler(logger) is not None:
        return None
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    return handler
