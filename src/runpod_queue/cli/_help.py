"""`--help` without type noise: a parameter's column shows its metavar (DURATION, PORT, FILE) or nothing.

typer 0.29 prints every parameter's Python type next to it (``<bool>`` on each flag, ``<str>``, ``<path>``,
``<int range>``) and offers no setting to turn that off: a per-option ``metavar=`` replaces it for options,
but nothing does for arguments (their metavar is already their name) or for the ``--help`` flag typer
adds. So the one method typer renders that column from is replaced here, in this one place; a test
(tests/cli/test_cli_help.py) fails if typer renames it or stops rendering the column from it. A typer
without it gets the noise back, nothing worse.
"""

from __future__ import annotations

from typing import Any

import typer.core

__all__ = ["show_only_metavars"]

_RENDERED_BY = "display_type_rich"  # typer.core's name for "the text in the type column"


def _metavar_only(param: Any, ctx: Any) -> str:
    """An option's explicit metavar; nothing for a flag, an argument (its name is its metavar) or an
    option declared without one (a test makes every option that takes a value declare one)."""
    takes_value = isinstance(param, typer.core.TyperOption) and not (param.is_flag or param.count)
    if takes_value and param.metavar:
        return str(param.metavar)
    return ""


def show_only_metavars() -> bool:
    """Make typer's help show explicit metavars only (idempotent); False if this typer has no such method
    (pyproject.toml pins the versions this was checked with)."""
    classes = (typer.core.TyperArgument, typer.core.TyperOption)
    if not all(callable(getattr(cls, _RENDERED_BY, None)) for cls in classes):
        return False
    for cls in classes:
        setattr(cls, _RENDERED_BY, _metavar_only)
    return True
