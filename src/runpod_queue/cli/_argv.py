"""``--local [PORT]``: an option whose value may be left out, which click cannot express by itself."""

from __future__ import annotations

from typing import Any

import typer

from runpod_queue.cli._options import DEFAULT_LOCAL_PORT

__all__ = ["RpqCommand"]


class RpqCommand(typer.core.TyperCommand):
    """Lets ``--local`` stand alone: click has no optional option values, so a bare ``--local`` (last, or
    followed by something that is not a port) gets the default port inserted before parsing."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # click's or typer's vendored Context
        return super().parse_args(ctx, with_local_port(args))


def with_local_port(args: list[str]) -> list[str]:
    """``args`` with the default port after each bare ``--local``; nothing after ``--`` is touched."""
    fixed: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            fixed.extend(args[index:])
            break
        fixed.append(arg)
        if arg == "--local":
            following = args[index + 1] if index + 1 < len(args) else None
            if following is None or not following.isdigit():
                fixed.append(str(DEFAULT_LOCAL_PORT))
    return fixed
