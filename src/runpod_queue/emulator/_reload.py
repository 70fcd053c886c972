"""Hot reload for `rpq serve --reload`: a handler file that changes is imported again and swapped in.

Jobs already running finish on the old code (a run holds the handler it started with); the next job
takes the new one. A file that no longer imports, or no longer has the function, keeps the old handler:
the reason is logged and printed. Watching uses watchfiles (the `reload` extra), on a thread of its own,
and the swap happens on the emulator's loop.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runpod_queue.emulator._loading import HandlerLoadError, load_endpoint

if TYPE_CHECKING:
    from runpod_queue.emulator._server import Emulator

__all__ = ["HandlerReloader"]

log = logging.getLogger("runpod_queue.emulator")

# Milliseconds watchfiles waits for more changes before reporting (an editor's save is several writes).
_DEBOUNCE_MS = 100


class HandlerReloader:
    """Watches the handler files of an emulator's endpoints and swaps a changed one in."""

    def __init__(self, emulator: Emulator, references: dict[str, str], say: Callable[[str], None]) -> None:
        """`references`: endpoint id → the `ID=path/to/file.py[:function]` it was loaded from."""
        self.emulator = emulator
        self.references = references
        self.say = say
        self.files: dict[Path, list[str]] = {}
        for endpoint_id, reference in references.items():
            target = reference.partition("=")[2] or reference
            file_name = target.partition(".py:")[0] + ".py" if ".py:" in target else target
            self.files.setdefault(Path(file_name).resolve(), []).append(endpoint_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Watch on a daemon thread until `stop`."""
        self._thread = threading.Thread(target=self._watch, name="rpq-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()

    def _watch(self) -> None:
        import watchfiles

        folders = sorted({str(path.parent) for path in self.files})
        for changes in watchfiles.watch(*folders, debounce=_DEBOUNCE_MS, stop_event=self._stop):
            changed = {Path(name).resolve() for _, name in changes}
            for path in sorted(changed & self.files.keys()):
                for endpoint_id in self.files[path]:
                    self.reload(endpoint_id)

    def reload(self, endpoint_id: str) -> bool:
        """Import the endpoint's file again and swap its handler; False (old handler kept) on error."""
        reference = self.references[endpoint_id]
        try:
            loaded = load_endpoint(reference)
        except HandlerLoadError as exc:
            message = f"reload of {endpoint_id} failed, the old handler stays: {exc}"
            log.error("%s", message)
            self.say(message)
            return False
        emulator = self.emulator

        def swap() -> None:
            ep = emulator.core.endpoints.get(endpoint_id)
            if ep is not None:
                ep.spec = dataclasses.replace(ep.spec, handler=loaded.spec.handler)

        loop = emulator.app.loop
        if loop is None or not loop.is_running():
            swap()
        else:
            loop.call_soon_threadsafe(swap)
        self.say(f"reloaded {endpoint_id} from {loaded.source}")
        return True
