"""Helpers for the worker side: code that runs inside your RunPod handler, not in the client.

``keep_key(handler)`` lets a handler take part in ``rpq batch --native`` (``BatchRunner(native=True)``):
RunPod's Batch Jobs results carry no input and no index, so the runner sends each item's key inside its
input and ties each result back through the output. Import-light: only the standard library runs here.

```python
import runpod
from runpod_queue.worker import keep_key

@keep_key
def handler(job):
    return {"upper": job["input"]["text"].upper()}

runpod.serverless.start({"handler": handler})
```
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar, cast

from runpod_queue._public import publish as _publish
from runpod_queue.worker._keys import NO_KEY, OUTPUT_FIELD, add_key, split_key

__all__ = ["keep_key"]

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _strip(job: Any) -> tuple[Any, Any]:
    """(key, the job as the user's handler should see it)."""
    if not isinstance(job, dict):
        return NO_KEY, job
    key, value = split_key(job.get("input"))
    if key is NO_KEY:
        return NO_KEY, job
    return key, {**job, "input": value}


def _keyed(output: Any, key: Any) -> Any:
    return output if key is NO_KEY else add_key(output, key, OUTPUT_FIELD)


def keep_key(handler: _Handler) -> _Handler:
    """Wrap a RunPod handler so the batch key travels around it: ``rpq batch --native`` needs this.

    The runner sends each input with its key in a ``_rpq_key`` field (merged into an object input; any
    other input is sent as ``{"_rpq_key": KEY, "_rpq_input": VALUE}``). The wrapper removes it, so your
    handler sees exactly the input of your file, and puts it back into what the handler returns:

    - an object output gains the field: ``{...your output..., "_rpq_key": KEY}``;
    - any other output (a list, a string, a number, ``None``, an object that has a ``_rpq_*`` field) is
      returned as ``{"_rpq_key": KEY, "_rpq_output": VALUE}``;
    - a generator handler's every yielded chunk carries the key the same way. Its output is the list of
      its chunks only with ``return_aggregate_stream: True`` in ``runpod.serverless.start``'s config
      (otherwise it is empty, and so carries no key): set it for a generator handler in a native batch.

    The runner strips the key again before writing the output file. A job without a key (a ``/run`` job,
    a test call) passes through untouched, so one handler serves both. An exception is not caught: the
    job fails as it would without the wrapper, and its result carries no key (see the batch-jobs docs for
    how the runner reports such items). Sync, ``async``, generator and async generator handlers keep
    their kind, which is how ``runpod`` decides how to call them.

    Args:
        handler: The handler you would pass to ``runpod.serverless.start``.

    Returns:
        A handler of the same kind (sync, async, generator, async generator).
    """
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def agen(job: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            key, inner = _strip(job)
            async for chunk in handler(inner, *args, **kwargs):
                yield _keyed(chunk, key)

        return cast(_Handler, agen)
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def gen(job: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            key, inner = _strip(job)
            for chunk in handler(inner, *args, **kwargs):
                yield _keyed(chunk, key)

        return cast(_Handler, gen)
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def coro(job: Any, *args: Any, **kwargs: Any) -> Any:
            key, inner = _strip(job)
            return _keyed(await handler(inner, *args, **kwargs), key)

        return cast(_Handler, coro)
    if not callable(handler):
        raise TypeError(f"keep_key wraps a handler function, got {type(handler).__name__}")

    @functools.wraps(handler)
    def plain(job: Any, *args: Any, **kwargs: Any) -> Any:
        key, inner = _strip(job)
        return _keyed(handler(inner, *args, **kwargs), key)

    return cast(_Handler, plain)


_publish(globals())
