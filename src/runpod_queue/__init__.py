"""runpod-queue: client, emulator, batch runner and CLI for RunPod Serverless queue endpoints."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# First, before any module below imports httpx: it imports httpx without httpx's own CLI (see _startup).
from runpod_queue import _startup  # noqa: F401  # isort: skip

from runpod_queue._batch_jobs import AsyncBatches, Batch, Batches, BatchRequestResult, BatchStatus
from runpod_queue._client import Client, Endpoint, JobStream
from runpod_queue._contract import JobStatus, OperationLimit
from runpod_queue._diagnosis import Diagnosis, WaitReason
from runpod_queue._limits import RateLimits
from runpod_queue._logs import setup_logging
from runpod_queue._models import Health, Job, JobCounts, Policy, S3Config, StreamChunk, WorkerCounts
from runpod_queue._public import publish as _publish
from runpod_queue._public import relocate as _relocate
from runpod_queue._retry import Retries, RetryNotice
from runpod_queue._version import __version__ as __version__
from runpod_queue.errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    JobFailedError,
    JournalError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RunpodQueueError,
    ServerError,
    StorageError,
    WaitTimeoutError,
    WebhookVerificationError,
)

if TYPE_CHECKING:
    from runpod_queue._aio import AsyncClient, AsyncEndpoint, AsyncJobStream
    from runpod_queue._management import (
        AsyncManagement,
        EndpointInfo,
        LogLine,
        Management,
        WorkerInfo,
        Workers,
        WorkerSummary,
    )
    from runpod_queue._storage import AsyncS3Store, S3Store, Upload
    from runpod_queue.batch import BatchResult, BatchRunner, BatchSummary, PollOptions, WebhookOptions

setup_logging()  # RUNPOD_QUEUE_LOG=debug|info, as openai's OPENAI_LOG

# The asyncio client and the batch runner load aiohttp, about half of `import runpod_queue`'s time (~0.4 s
# of ~0.8 s measured with `python -X importtime`); every `rpq` start paid it though most commands use the
# sync client. They are imported on first use instead (PEP 562); `from runpod_queue import AsyncClient`
# works as before.
_LAZY = {
    "AsyncClient": "runpod_queue._aio",
    "AsyncEndpoint": "runpod_queue._aio",
    "AsyncJobStream": "runpod_queue._aio",
    "AsyncS3Store": "runpod_queue._storage",
    "BatchResult": "runpod_queue.batch",
    "BatchRunner": "runpod_queue.batch",
    "BatchSummary": "runpod_queue.batch",
    "PollOptions": "runpod_queue.batch",
    "WebhookOptions": "runpod_queue.batch",
    # The management client sends through an AsyncClient too (aiohttp): also on first use.
    "AsyncManagement": "runpod_queue._management",
    "EndpointInfo": "runpod_queue._management",
    "LogLine": "runpod_queue._management",
    "Management": "runpod_queue._management",
    "WorkerInfo": "runpod_queue._management",
    "WorkerSummary": "runpod_queue._management",
    "Workers": "runpod_queue._management",
    "S3Store": "runpod_queue._storage",
    "Upload": "runpod_queue._storage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runpod_queue' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    _relocate(value, __name__)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBatches",
    "AsyncClient",
    "AsyncEndpoint",
    "AsyncJobStream",
    "AsyncManagement",
    "AsyncS3Store",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchRequestResult",
    "BatchResult",
    "BatchRunner",
    "BatchStatus",
    "BatchSummary",
    "Batches",
    "Client",
    "ConfigurationError",
    "Diagnosis",
    "Endpoint",
    "EndpointInfo",
    "Health",
    "Job",
    "JobCounts",
    "JobFailedError",
    "JobStatus",
    "JobStream",
    "JournalError",
    "LogLine",
    "Management",
    "NotFoundError",
    "OperationLimit",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Policy",
    "PollOptions",
    "RateLimitError",
    "RateLimits",
    "Retries",
    "RetryNotice",
    "RunpodQueueError",
    "S3Config",
    "S3Store",
    "ServerError",
    "StorageError",
    "StreamChunk",
    "Upload",
    "WaitReason",
    "WaitTimeoutError",
    "WebhookOptions",
    "WebhookVerificationError",
    "WorkerCounts",
    "WorkerInfo",
    "WorkerSummary",
    "Workers",
]

_publish(globals(), _LAZY.items())
