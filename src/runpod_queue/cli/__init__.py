"""The `rpq` command (needs the `cli` extra; `rpq serve` and `rpq demo` also the `emulator` extra)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: a missing extra is a one-line hint, not a traceback."""
    try:
        from runpod_queue.cli._app import main as run
    except ImportError as exc:
        sys.stderr.write(
            f"error: rpq needs its command-line extra ({exc.name} is missing): "
            "install the package with its extras, e.g. pip install './runpod-queue[all]'\n"
        )
        raise SystemExit(2) from None
    run()


def __getattr__(name: str) -> Any:
    if name == "app":
        from runpod_queue.cli._app import app

        return app
    raise AttributeError(name)
