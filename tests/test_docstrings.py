"""Every public class, function and method says what it does; the clients' say it in full.

An IDE shows these docstrings and the API reference renders them (Google style: Args/Returns/Raises).
The async twins carry their own text: "See Endpoint.run" tells an AsyncEndpoint user nothing.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

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
CLIENT_CLASSES = ["Client", "Endpoint", "JobStream", "AsyncClient", "AsyncEndpoint", "AsyncJobStream"]


def _own_members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods and properties the class itself defines (inherited ones are the base's to document)."""
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        member = getattr(member, "__func__", member)  # classmethod / staticmethod
        if inspect.isfunction(member) or isinstance(member, property):
            yield name, member


def _documented() -> Iterator[tuple[str, Any]]:
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                yield f"{module_name}.{name}", value
            if inspect.isclass(value):
                for attr, member in _own_members(value):
                    yield f"{module_name}.{name}.{attr}", member


@pytest.mark.parametrize(("qualname", "value"), list(_documented()))
def test_every_public_class_function_and_method_has_a_docstring(qualname: str, value: Any) -> None:
    assert (value.__doc__ or "").strip(), f"{qualname} has no docstring"


def _args_section(doc: str) -> set[str]:
    match = re.search(r"^\s*Args:\n((?:\s{4,}.*\n?|\n)+)", doc, re.MULTILINE)
    if match is None:
        return set()
    return set(re.findall(r"^\s+\**(\w+):", match.group(1), re.MULTILINE))


def _client_methods() -> Iterator[tuple[str, Any]]:
    for class_name in CLIENT_CLASSES:
        cls = getattr(runpod_queue, class_name)
        yield class_name, cls
        for attr, member in _own_members(cls):
            yield f"{class_name}.{attr}", member


@pytest.mark.parametrize(("qualname", "value"), list(_client_methods()))
def test_the_clients_explain_every_parameter_in_their_own_words(qualname: str, value: Any) -> None:
    doc = inspect.getdoc(value) or ""
    assert not doc.startswith("See "), f"{qualname}: say what it does, not where to look"
    if isinstance(value, property):
        return
    function = value.__init__ if inspect.isclass(value) else value
    if function is object.__init__:
        return
    wanted = {name for name in inspect.signature(function).parameters if name != "self"}
    if inspect.isclass(value) and value.__name__.endswith("JobStream"):
        wanted = set()  # made by Endpoint.stream, not by users
    if inspect.isclass(value) and value.__name__.endswith("Endpoint"):
        wanted = set()  # made by Client.endpoint(id), which documents the id
    missing = wanted - _args_section(doc)
    assert not missing, f"{qualname}: Args: does not explain {sorted(missing)}"
