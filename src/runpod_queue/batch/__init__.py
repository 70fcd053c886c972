"""Durable batch runs: thousands of inputs through one endpoint, every result back, nothing paid twice.

``BatchRunner`` (``runner.py``) orchestrates one module per part: ``inputs`` (reading an item),
``journal`` (the SQLite record that makes a run resumable), ``submit`` (``/run`` around the journal),
``schedule`` (pure: when each job is next checked), ``collect`` (status checks, ``/retry``, webhook
deliveries), ``receiver`` (the webhook server), ``output`` (the results file), ``state`` (what one run
shares) and ``options`` (``PollOptions``, ``WebhookOptions``). ``progress`` is an optional rich live display
(the library itself does not need rich).
"""

from __future__ import annotations

from runpod_queue._public import publish as _publish
from runpod_queue.batch._journal import JournalError
from runpod_queue.batch._options import PollOptions, WebhookOptions
from runpod_queue.batch._runner import BatchRunner
from runpod_queue.batch._types import BatchResult, BatchSummary, ItemStatus

__all__ = [
    "BatchResult",
    "BatchRunner",
    "BatchSummary",
    "ItemStatus",
    "JournalError",
    "PollOptions",
    "WebhookOptions",
]

_publish(globals())
