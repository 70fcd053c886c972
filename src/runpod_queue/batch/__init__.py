"""Durable batch runs: thousands of inputs through one endpoint, every result back, nothing paid twice.

``BatchRunner`` (``runner.py``) drives the work; ``journal.py`` is the SQLite record that makes a run
resumable; ``progress.py`` is an optional rich live display (the library itself does not need rich).
"""

from __future__ import annotations

from runpod_queue.batch._types import BatchResult, BatchSummary
from runpod_queue.batch.journal import JournalError
from runpod_queue.batch.runner import BatchRunner

__all__ = ["BatchResult", "BatchRunner", "BatchSummary", "JournalError"]
