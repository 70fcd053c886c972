"""The `rpq` command (needs the `cli` extra)."""

from __future__ import annotations

from runpod_queue.cli._app import app, main

__all__ = ["app", "main"]
