"""The vocabulary between the client's logic and its two drivers.

Every operation is a generator (a *flow*) that yields actions and never does I/O itself; ``Client`` and
``AsyncClient`` run the actions — one with blocking calls, one with ``await`` — and send the outcome back
in. So the retry loop, the deadlines and the polling are written once and cannot drift between the two.

- ``Exchange``: take a rate-limit slot, send the request, give the slot back. The driver sends back the
  ``Answer`` (any status), or throws in ``TransportFailure`` (no answer) or ``Expired`` (no slot before
  the deadline). Any other exception (cancellation, Ctrl-C) is thrown in too, so the flow sees it.
- ``Sleep``: pause; ``Notify``: hand a new job snapshot to the caller's ``on_update``; ``Emit``: hand a
  stream chunk to the caller.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runpod_queue._calls import Call
from runpod_queue._models import Job, StreamChunk
from runpod_queue._transport import Budget

__all__ = ["Action", "Emit", "Exchange", "Expired", "Finished", "Flow", "Notify", "Sleep"]

T = TypeVar("T")


@dataclass(slots=True)
class Exchange:
    call: Call
    url: str
    budget: Budget
    deadline: float | None  # ``time.monotonic()`` instant; also bounds the wait for a rate-limit slot


@dataclass(slots=True)
class Sleep:
    seconds: float


@dataclass(slots=True)
class Notify:
    job: Job | Any  # a Job; a Batch for `Batches.wait` (whose on_update takes Batch snapshots)


@dataclass(slots=True)
class Emit:
    chunk: StreamChunk


Action = Exchange | Sleep | Notify | Emit
Flow = Generator[Action, Any, T]


class Expired(Exception):
    """The caller's deadline passed inside a request (or before a rate-limit slot freed up). Internal: the
    flow that set the deadline turns it into WaitTimeoutError; ``__cause__`` is the last failure seen."""


class Finished(Generic[T]):
    """A flow's return value, as a driver hands it back, told apart from a chunk the flow emitted."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value
