"""Exported names live at their public path (``runpod_queue.Job``), in reprs, docs and pickles.

A pickle names the module a class lives in; naming a private one (``runpod_queue._models``) would break
every stored pickle the day that module is renamed. Parametrized over the public modules' ``__all__``, so a
name exported later is checked without editing this file (a new dataclass needs an example below).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import inspect
import pickle
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import httpx
import pytest

import runpod_queue

PUBLIC_MODULES = [
    "runpod_queue",
    "runpod_queue.errors",
    "runpod_queue.batch",
    "runpod_queue.emulator",
    "runpod_queue.webhooks",
    "runpod_queue.testing",
    "runpod_queue.worker",
]


def _exported() -> list[tuple[str, str]]:
    pairs = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        pairs += [(module_name, name) for name in module.__all__]
    return pairs


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


@pytest.mark.parametrize(("module_name", "name"), _exported())
def test_an_exported_class_or_function_names_a_public_module_it_can_be_found_in(
    module_name: str, name: str
) -> None:
    value = getattr(importlib.import_module(module_name), name)
    if not isinstance(value, type | types.FunctionType):
        return
    home = value.__module__
    assert not _is_private(home), f"{module_name}.{name} says it lives in {home}"
    if name in runpod_queue.__all__:
        assert home == "runpod_queue", f"{name}: the root exports it, so it is runpod_queue.{name}"
    assert getattr(importlib.import_module(home), value.__qualname__) is value


@pytest.mark.parametrize(("module_name", "name"), _exported())
def test_type_hints_of_a_moved_class_still_resolve(module_name: str, name: str) -> None:
    """pydantic, cattrs and typing.get_type_hints look names up in the class's ``__module__``."""
    value = getattr(importlib.import_module(module_name), name)
    if isinstance(value, type):
        typing.get_type_hints(value)


def test_the_lazy_names_get_the_root_module_without_importing_aiohttp_early() -> None:
    code = (
        "import sys, runpod_queue\n"
        "early = 'aiohttp' in sys.modules\n"
        "from runpod_queue._aio import AsyncEndpoint\n"  # a direct import of the private module, as the CLI's
        "import runpod_queue.batch\n"
        "print(early, AsyncEndpoint.__module__, runpod_queue.batch.BatchRunner.__module__,"
        " runpod_queue.AsyncClient.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "runpod_queue", "runpod_queue", "runpod_queue"]


def test_a_pickled_job_names_runpod_queue_and_no_private_module() -> None:
    job = runpod_queue.Job.from_dict({"id": "j1", "status": "FAILED", "error": "boom", "delayTime": 1200})
    data = pickle.dumps(job)
    assert b"runpod_queue" in data
    assert b"runpod_queue._" not in data
    again = pickle.loads(data)
    assert again == job
    assert again.raw == job.raw and isinstance(again.raw, MappingProxyType)  # still read-only
    assert (again.error_message, again.delay_time) == ("boom", 1.2)


REQUEST = httpx.Request("POST", "https://api.runpod.ai/v2/e/run")

# Examples of the exported dataclasses; an exported dataclass without one fails below.
JOB = runpod_queue.Job.from_dict({"id": "j1", "status": "COMPLETED", "output": {"n": 1}, "executionTime": 5})
DATACLASS_EXAMPLES: dict[str, Callable[[], object]] = {
    "Batch": lambda: runpod_queue.Batch.from_dict(
        {"id": "batch_1", "status": "FINALIZED", "requestTotal": 2, "createdAt": 1783584000000}
    ),
    "BatchRequestResult": lambda: runpod_queue.BatchRequestResult.from_dict(
        {"id": "req_1", "status": "COMPLETED", "output": {"k": 1}}
    ),
    "BatchResult": lambda: runpod_queue.BatchResult(key="a", id="j1", status="COMPLETED", output=[1]),
    "BatchSummary": lambda: runpod_queue.BatchSummary(total=3, completed=2),
    "Health": lambda: runpod_queue.Health.from_dict({"jobs": {"inQueue": 2}, "workers": {"idle": 1}}),
    "Job": lambda: JOB,
    "JobCounts": lambda: runpod_queue.JobCounts(completed=1),
    "OperationLimit": lambda: runpod_queue.OperationLimit(10, None),
    "Policy": lambda: runpod_queue.Policy(execution_timeout=60, ttl=600, low_priority=True),
    "PollOptions": lambda: runpod_queue.PollOptions(concurrency=2),
    "RateLimits": lambda: runpod_queue.RateLimits(margin=0.5),
    "Retries": lambda: runpod_queue.Retries(),
    "S3Config": lambda: runpod_queue.S3Config("id", "secret", "bucket", "https://s3.example"),
    "StreamChunk": lambda: runpod_queue.StreamChunk({"token": "a"}, {"output": {"token": "a"}, "m": 1}),
    "WebhookOptions": lambda: runpod_queue.WebhookOptions(listen=("127.0.0.1", 0)),
    "WorkerCounts": lambda: runpod_queue.WorkerCounts(idle=2),
    "EndpointInfo": lambda: runpod_queue.EndpointInfo(
        "e", "e", "QUEUE", 0, 3, 5.0, "queue_delay", 4.0, 600.0, "OFF", {"id": "e"}
    ),
    "WorkerInfo": lambda: runpod_queue.WorkerInfo("w", "IDLE", False, 1.0, None, None),
    "WorkerSummary": lambda: runpod_queue.WorkerSummary(0, 1, 0, 0, 0, 1),
    "Diagnosis": lambda: runpod_queue.Diagnosis(
        runpod_queue.WaitReason.COLD_START,
        "Job j waits for a cold start.",
        "`rpq endpoint scale e --min 1`",
        "e",
        "j",
        JOB,
        1,
        0,
        runpod_queue.WorkerSummary(0, 0, 1, 0, 0, 1),
        0,
        3,
        "2026-01-01T00:00:00Z",
        (),
        None,
        None,
        None,
        runpod_queue.Health.from_dict({"jobs": {"inQueue": 1}, "workers": {"initializing": 1}}),
    ),
    "LogLine": lambda: runpod_queue.LogLine(
        datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC), "container", "ready", "id/1", None
    ),
    "Workers": lambda: runpod_queue.Workers(
        [runpod_queue.WorkerInfo("w", "IDLE", False, 1.0, None, None)],
        runpod_queue.WorkerSummary(0, 1, 0, 0, 0, 1),
        1,
    ),
    # Exported from the root by another change of #21; used only once the name is in __all__.
    "RetryNotice": lambda: runpod_queue.RetryNotice(  # type: ignore[attr-defined]
        url="https://api.runpod.ai/v2/e/status/j1",
        attempt=2,
        attempts=5,
        delay=1.5,
        error=runpod_queue.APIConnectionError("reset", request=REQUEST, sent=True),
    ),
}

# What an exported error's constructor is given, by parameter name.
ERROR_ARGUMENTS: dict[str, Any] = {
    "message": "boom",
    "reason": "bad token",
    "request": REQUEST,
    "response": httpx.Response(500, json={"error": "boom"}, request=REQUEST),
    "status_code": 500,
    "sent": True,
    "job": JOB,
    "job_id": "j1",
    "timeout": 2.5,
    "status": 403,
    "size": 11,
    "limit": 10,
}


def _error(cls: type[BaseException]) -> BaseException:
    """An instance built from ERROR_ARGUMENTS by the constructor's parameter names."""
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except ValueError:  # Exception's own constructor: a message
        return cls("boom")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.name not in ERROR_ARGUMENTS:
            assert parameter.default is not parameter.empty, f"add an example {parameter.name!r} above"
        elif parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = ERROR_ARGUMENTS[parameter.name]
        else:
            args.append(ERROR_ARGUMENTS[parameter.name])
    return cls(*args, **kwargs)


@pytest.mark.parametrize("name", runpod_queue.__all__)
def test_every_exported_error_and_dataclass_survives_a_pickle_round_trip(name: str) -> None:
    value = getattr(runpod_queue, name)
    if isinstance(value, type) and issubclass(value, BaseException):
        error = _error(value)
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is value and str(again) == str(error)
        assert again.__dict__.keys() == error.__dict__.keys()
        return
    if not (isinstance(value, type) and dataclasses.is_dataclass(value)):
        return  # clients, streams, runners, enums: no state to carry across processes
    assert name in DATACLASS_EXAMPLES, f"add an example of {name} to DATACLASS_EXAMPLES"
    example = DATACLASS_EXAMPLES[name]()
    data = pickle.dumps(example)
    assert b"runpod_queue._" not in data
    again = pickle.loads(data)
    for field in dataclasses.fields(example):  # compare=False fields (raw) too
        before, after = getattr(example, field.name), getattr(again, field.name)
        assert type(after) is type(before), field.name
        if isinstance(before, BaseException):  # exceptions compare by identity: compare what they say
            assert str(after) == str(before), field.name
        else:
            assert after == before, field.name


def _carried(value: object) -> object:
    """What an attribute says, comparably: httpx requests and responses have no equality of their own."""
    if isinstance(value, httpx.Request):
        return ("request", value.method, str(value.url), sorted(value.headers.multi_items()))
    if isinstance(value, httpx.Response):
        return ("response", value.status_code, value.content, _carried(value.request))
    return value


def _error_classes() -> list[type[BaseException]]:
    """Every error of runpod_queue.errors and every subclass of one defined anywhere in the package."""
    import runpod_queue.errors as errors

    found: list[type[BaseException]] = []
    pending: list[type[BaseException]] = [getattr(errors, name) for name in errors.__all__]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__qualname__)


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__qualname__)
def test_every_error_round_trips_through_pickle_with_every_attribute(cls: type[BaseException]) -> None:
    # Users ship errors through multiprocessing and task queues: what a handler reads on the other side
    # (the job of a JobFailedError, the last snapshot and timeout of a WaitTimeoutError, a status code)
    # must be the same value, not merely present.
    error = _error(cls)
    if hasattr(error, "retry_after"):
        error.retry_after = 3.0  # set from the Retry-After header after construction
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls
    assert str(again) == str(error) and again.args == error.args
    assert again.__dict__.keys() == error.__dict__.keys()
    for name, value in error.__dict__.items():
        assert _carried(getattr(again, name)) == _carried(value), name
    job = getattr(error, "job", None)
    if job is not None:  # the Job inside pickles whole, its raw answer too
        assert again.job.raw == job.raw and again.job.error_message == job.error_message
