"""Public signatures show their defaults as values (``run_sync(timeout=90.0)``), as an IDE or the API
reference renders them from the source, and those values stay equal to RunPod's contract constants."""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runpod_queue import AsyncEndpoint, Endpoint, RateLimits, _contract
from runpod_queue.emulator import Timings
from runpod_queue.webhooks import DEFAULT_EXPIRES_IN, DEFAULT_MAX_BODY, WebhookReceiver, WebhookSigner

PUBLIC_MODULES = [
    "runpod_queue",
    "runpod_queue.batch",
    "runpod_queue.emulator",
    "runpod_queue.webhooks",
    "runpod_queue.worker",
]


def _public_callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value):
                yield f"{module_name}.{name}", value
            elif inspect.isclass(value) and not issubclass(value, BaseException):
                for attr, member in vars(value).items():
                    member = getattr(member, "__func__", member)  # classmethod / staticmethod
                    if inspect.isfunction(member) and (attr == "__init__" or not attr.startswith("_")):
                        yield f"{module_name}.{name}.{attr}", member


def _defaults(function: Callable[..., Any]) -> list[tuple[str, ast.expr]]:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):  # generated (dataclass __init__): its defaults are the fields' values
        return []
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    args = node.args
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
    pairs += [(arg, d) for arg, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
    return [(arg.arg, default) for arg, default in pairs]


@pytest.mark.parametrize(("qualname", "function"), list(_public_callables()))
def test_a_default_is_written_as_a_value_not_a_constant_or_a_formula(
    qualname: str, function: Callable[..., Any]
) -> None:
    for name, default in _defaults(function):
        assert not isinstance(default, ast.Name | ast.BinOp), (
            f"{qualname}({name}={ast.unparse(default)}): write the value, so signatures show it"
        )


def test_the_written_defaults_are_runpods() -> None:
    wait = _contract.RUNSYNC_DEFAULT_WAIT_MS / 1000
    for endpoint in (Endpoint, AsyncEndpoint):
        assert inspect.signature(endpoint.run_sync).parameters["timeout"].default == wait
    assert Timings() == Timings(
        retention_run=_contract.RETENTION_RUN_MS / 1000,
        retention_sync=_contract.RETENTION_SYNC_MS / 1000,
        webhook_retry_gap=_contract.WEBHOOK_RETRY_GAP_MS / 1000,
        default_execution_timeout=_contract.DEFAULT_EXECUTION_TIMEOUT_MS / 1000,
        default_ttl=_contract.DEFAULT_TTL_MS / 1000,
        runsync_default_wait=wait,
        status_sync_default_wait=wait,
    )
    assert RateLimits().window == _contract.RATE_WINDOW_S
    assert inspect.signature(WebhookSigner).parameters["expires_in"].default == DEFAULT_EXPIRES_IN
    assert inspect.signature(WebhookReceiver).parameters["max_body"].default == DEFAULT_MAX_BODY
