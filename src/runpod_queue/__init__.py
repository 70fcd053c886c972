"""runpod-queue: client, emulator, batch runner and CLI for RunPod Serverless queue endpoints."""

from __future__ import annotations

from runpod_queue._contract import JobStatus, OperationLimit
from runpod_queue._limits import RateLimits
from runpod_queue._models import Health, Job, JobCounts, Policy, S3Config, StreamChunk, WorkerCounts
from runpod_queue._retry import Retries
from runpod_queue._version import __version__ as __version__
from runpod_queue.aio import AsyncClient, AsyncEndpoint, AsyncJobStream
from runpod_queue.batch import BatchResult, BatchRunner, BatchSummary, PollOptions, WebhookOptions
from runpod_queue.client import Client, Endpoint, JobStream
from runpod_queue.errors import (
    APIConnectionError,
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
    WaitTimeoutError,
    WebhookVerificationError,
)

__all__ = [
    "APIConnectionError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncEndpoint",
    "AsyncJobStream",
    "AuthenticationError",
    "BadRequestError",
    "BatchResult",
    "BatchRunner",
    "BatchSummary",
    "Client",
    "ConfigurationError",
    "Endpoint",
    "Health",
    "Job",
    "JobCounts",
    "JobFailedError",
    "JobStatus",
    "JobStream",
    "JournalError",
    "NotFoundError",
    "OperationLimit",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Policy",
    "PollOptions",
    "RateLimitError",
    "RateLimits",
    "Retries",
    "RunpodQueueError",
    "S3Config",
    "ServerError",
    "StreamChunk",
    "WaitTimeoutError",
    "WebhookOptions",
    "WebhookVerificationError",
    "WorkerCounts",
]
