"""The public surface is exactly what docs/client.md documents — no more, no less."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import runpod_queue
from runpod_queue import errors

PUBLIC = [
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

CLIENT_DOCS = Path(__file__).resolve().parents[1] / "docs" / "client.md"


def test_all_is_exactly_the_documented_list_and_sorted() -> None:
    assert runpod_queue.__all__ == PUBLIC
    assert sorted(runpod_queue.__all__) == runpod_queue.__all__
    for name in PUBLIC:
        assert hasattr(runpod_queue, name), name


def test_every_public_name_is_in_the_client_reference() -> None:
    documented = set(re.findall(r"`([A-Z][A-Za-z0-9]+)", CLIENT_DOCS.read_text()))
    assert set(PUBLIC) <= documented, sorted(set(PUBLIC) - documented)


def test_the_error_tree() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.RunpodQueueError)
        assert getattr(runpod_queue, name) is cls
        assert name in (errors.__doc__ or "")
    for name in ("BadRequestError", "NotFoundError", "PayloadTooLargeError", "RateLimitError", "ServerError"):
        assert issubclass(getattr(errors, name), errors.APIStatusError)
    assert issubclass(errors.APITimeoutError, errors.APIConnectionError)
    # "A request failed" is one class to catch, as in openai-python; what is not a request is outside it.
    for name in ("APIStatusError", "APIConnectionError", "APIResponseError"):
        assert issubclass(getattr(errors, name), errors.APIError)
    for name in ("JobFailedError", "WaitTimeoutError", "JournalError", "ConfigurationError"):
        assert not issubclass(getattr(errors, name), errors.APIError)


def test_every_public_name_resolves_and_unknown_names_raise() -> None:
    for name in runpod_queue.__all__:
        assert getattr(runpod_queue, name).__name__ == name
    assert set(runpod_queue.__all__) <= set(dir(runpod_queue))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        runpod_queue.Nope  # noqa: B018


def test_the_cli_starts_without_loading_aiohttp() -> None:
    """`rpq` commands use the sync client; aiohttp (about half of the import time) loads only when needed."""
    code = (
        "import sys, runpod_queue.cli._app\n"
        "print(sorted(m for m in ('aiohttp', 'runpod_queue._aio', 'runpod_queue.batch') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
