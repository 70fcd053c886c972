"""The results file: one JSON line per key, append-only, valid JSONL after any kill.

On open it is reconciled with the journal: a partial last line (a kill mid-write) is cut off, the keys
present are marked written (the file is the authority), and terminal results the file lacks are appended.
During the run a line is appended only after its result is in the journal, and ``written`` marks are
batched — a mark lost to a kill is restored by the next reconciliation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from runpod_queue.batch._journal import Journal
from runpod_queue.batch._types import BatchResult, key_text

__all__ = ["OutputFile", "drop_lines"]

_MARK_BATCH = 512  # written marks per journal transaction


class OutputFile:
    """Where results go: the file (if any) and the ``on_result`` callback, each exactly once per key."""

    def __init__(
        self,
        path: Path | None,
        journal: Journal,
        on_result: Callable[[BatchResult], object] | None,
    ) -> None:
        self.path = path
        self._journal = journal
        self._on_result = on_result
        self._unmarked: list[str] = []
        self._fh: IO[bytes] | None = None

    def open(self) -> int:
        """Reconcile and open for appending; returns how many results were (re)delivered."""
        if self.path is not None:
            self._journal.reset_written(complete_keys(self.path))
            self._fh = open(self.path, "ab")  # noqa: SIM115 - held for the whole run
        delivered = 0
        for key, line in self._journal.unwritten_results():
            self.deliver(key, line)
            delivered += 1
        self.flush_marks()
        return delivered

    def deliver(self, key: str, line: str) -> None:
        """Append one result line (already journaled) and hand it to ``on_result``."""
        if self._fh is not None:
            self._fh.write(line.encode() + b"\n")
            self._fh.flush()
        if self._on_result is not None:
            self._on_result(BatchResult.from_dict(json.loads(line)))
        self._unmarked.append(key)
        if len(self._unmarked) >= _MARK_BATCH:
            self.flush_marks()

    def flush_marks(self) -> None:
        if self._unmarked:
            self._journal.mark_written(self._unmarked)
            self._unmarked = []

    def close(self) -> None:
        self.flush_marks()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def drop_lines(path: Path, keys: set[str]) -> None:
    """Rewrite ``path`` without the lines of ``keys`` (key texts): a new file renamed over the old one."""
    if not path.exists():
        return
    list(complete_keys(path))  # cut a torn tail first
    temporary = path.with_name(path.name + ".rpq-tmp")
    with open(path, "rb") as source, open(temporary, "wb") as target:
        for raw in source:
            if key_text(json.loads(raw)["key"]) not in keys:
                target.write(raw)
        target.flush()
        os.fsync(target.fileno())
    os.replace(temporary, path)


def complete_keys(path: Path) -> Iterator[str]:
    """Key texts of the complete lines in ``path``; truncates a torn or unreadable tail."""
    if not path.exists():
        return
    good = 0
    with open(path, "rb+") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                key = json.loads(raw)["key"]
            except (ValueError, KeyError, TypeError):
                break
            good += len(raw)
            yield key_text(key)
        fh.truncate(good)
