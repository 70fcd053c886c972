"""Reading one input item: a JSON line, a dict or a ``(key, input)`` tuple → its key and handler input.

Pure and per item, so the runner can stream inputs of any size: a malformed item is a value (``Invalid``,
with the reason), never an exception that would stop the batch.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["SKIP", "Invalid", "parse_item"]


class _Skip:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIP"


SKIP: Final = _Skip()  # a blank line: not an item at all


class Invalid:
    """An item that cannot be sent; recorded as an INVALID result under its line number."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"Invalid({self.message!r})"


def _valid_key(key: Any) -> bool:
    return isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool))


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def parse_item(raw: Any, line: int) -> tuple[Any, Any] | Invalid | _Skip:
    """(key, input) for one input item, ``Invalid`` with the reason, or ``SKIP`` for a blank line.

    An item is a JSON line (str/bytes), an already parsed dict, or a ``(key, input)`` tuple. A dict whose
    keys are exactly ``key`` and ``input`` is a keyed item; any other dict is the handler input itself,
    keyed by its line number. A dict with ``key`` and ``input`` *and* more fields is ``Invalid``: it is
    almost surely a wrapper with a typo or a stray field, and sending it whole as the input under a line
    number (or dropping the field with a warning) would run something the user did not mean. A handler
    input that really has those field names goes through the wrapper: ``{"key": ..., "input": {...}}``.
    """
    if isinstance(raw, tuple):
        if len(raw) != 2 or not _valid_key(raw[0]):
            return Invalid("a tuple item must be (key, input) with a str or int key")
        return raw[0], raw[1]
    if isinstance(raw, str | bytes | bytearray):
        if not raw.strip():
            return SKIP
        try:
            raw = json.loads(raw.strip())
        except json.JSONDecodeError as exc:
            # The decoder's own "line 2 column 1" counts lines within this one line: give the column only.
            return Invalid(f"invalid JSON at column {exc.colno}: {exc.msg}")
        except ValueError as exc:
            return Invalid(f"invalid JSON: {exc}")
    if not isinstance(raw, dict):
        return Invalid(f"expected a JSON object, got {_json_type(raw)}")
    if raw.keys() == {"key", "input"}:
        if not _valid_key(raw["key"]):
            return Invalid(f"'key' must be a string or an integer, got {raw['key']!r:.60}")
        return raw["key"], raw["input"]
    if "key" in raw and "input" in raw:
        extra = ", ".join(repr(name) for name in sorted(raw.keys() - {"key", "input"}))
        return Invalid(
            f"a keyed line has only 'key' and 'input', this one also has {extra:.120}: move it into"
            ' "input", or wrap a handler input with these fields as {"key": ..., "input": {...}}'
        )
    return line, raw
