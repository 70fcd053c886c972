"""The example handlers that come with runpod-queue, found by name wherever it is installed.

A checkout keeps them in ``examples/`` next to ``src/``; the wheel ships the same files as
``runpod_queue/_examples`` (pyproject's ``force-include``). ``rpq demo`` serves them, and ``rpq serve echo``
names one, so the commands the demo suggests work from an installed package, not only from a checkout.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

__all__ = ["example_folders", "example_names", "shipped_example"]

_HERE = Path(__file__).resolve()
_BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # no path, no module dots, no :function


def example_folders() -> list[Path]:
    """Where the examples may be: the checkout's ``examples/`` first, then the wheel's copy."""
    return [_HERE.parents[3] / "examples", _HERE.parents[1] / "_examples"]


def example_names() -> list[str]:
    """The shipped examples' names (file stems), for messages that list them."""
    for folder in example_folders():
        names = sorted(path.stem for path in folder.glob("*.py") if not path.stem.startswith("_"))
        if names:
            return names
    return []


def shipped_example(target: str) -> Path | None:
    """The shipped file a bare HANDLER such as ``echo`` names, or None.

    Only a bare name that is neither a file in the working directory nor an importable module: what
    ``rpq serve`` did with those before (load the file, import the module) stays as it was.
    """
    if not _BARE_NAME.match(target) or Path(target).exists() or importlib.util.find_spec(target) is not None:
        return None
    for folder in example_folders():
        path = folder / f"{target}.py"
        if path.is_file():
            return path
    return None
