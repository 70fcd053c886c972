"""Import httpx without its own command line: ~0.1 s CPU off every process that imports this package.

Imported first by `runpod_queue/__init__.py`, so it runs before any module of the package imports httpx.

`import httpx` also imports `httpx._main` (the `httpx` command: click, rich's console, progress and syntax
modules, pygments) whenever those are installed, and the `cli` extra installs them. So every `rpq` command,
every `rpq serve`, every handler process and every script using the client paid for a command line it
never runs: measured on 2 cores, `python -c "import httpx"` costs 258 ms CPU with it and 162 ms without.

httpx itself treats `_main` as optional (`try: from ._main import main / except ImportError:` a stub that
says to install `httpx[cli]`). `import_httpx` takes that path on purpose, then puts back a `httpx.main`
that imports the real one when called, so nothing observable changes: `httpx.main(...)` still runs the
httpx command, and `import httpx._main` still works. Should a future httpx import `_main` unconditionally,
httpx is imported as it is. A process that imported httpx before this package is left alone.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["import_httpx"]

_CLI = "httpx._main"


def _main(*args: Any, **kwargs: Any) -> Any:
    """httpx's command-line entry point (`httpx.main`), imported on first call."""
    from httpx._main import main

    return main(*args, **kwargs)


def import_httpx() -> None:
    """Import httpx, leaving its command-line module unimported until `httpx.main` is called."""
    if "httpx" in sys.modules or _CLI in sys.modules:
        return
    sys.modules[_CLI] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import httpx
    except ImportError:  # this httpx needs _main (or is missing): the ordinary import decides
        blocked = False
    else:
        blocked = True
    finally:
        if _CLI in sys.modules and sys.modules[_CLI] is None:
            del sys.modules[_CLI]
    if blocked:
        vars(httpx)["main"] = _main
    else:
        import httpx


import_httpx()
