"""Pickling for the frozen dataclasses that hold read-only mappings (``Job.raw``, ``RateLimits.limits``).

A ``MappingProxyType`` keeps ``raw`` from changing under a caller, but it does not pickle, and a ``Job``
must (multiprocessing, task queues, the errors that carry one). These two methods send such a field as a
plain dict and make it read-only again on the way back in; every other field travels as it is.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

__all__ = ["FrozenState", "frozen_getstate", "frozen_setstate"]

FrozenState = tuple[dict[str, Any], tuple[str, ...]]


def frozen_getstate(self: Any) -> FrozenState:
    """Every field's value, read-only mappings as dicts, and the names of those to make read-only again."""
    values: dict[str, Any] = {}
    proxied: list[str] = []
    for field in dataclasses.fields(self):
        value = getattr(self, field.name)
        if isinstance(value, MappingProxyType):
            value = dict(value)
            proxied.append(field.name)
        values[field.name] = value
    return values, tuple(proxied)


def frozen_setstate(self: Any, state: FrozenState) -> None:
    """Set the fields back (``object.__setattr__``: the class is frozen), re-wrapping the mappings."""
    values, proxied = state
    for name, value in values.items():
        object.__setattr__(self, name, MappingProxyType(value) if name in proxied else value)
