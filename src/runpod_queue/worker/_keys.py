"""How a batch key travels through a native batch: inside the request's input, back inside its output.

RunPod's Batch Jobs results carry no input and no index (`runpod/docs`
`serverless/advanced-workflows/batch-jobs.mdx`), so ``rpq batch --native`` puts each item's key into the
input it sends, and ``keep_key`` (on the worker) takes it out before the user's handler runs and puts it
into the output. One rule for both directions:

- a JSON object without the reserved fields gets one more field: ``{...yours..., "_rpq_key": KEY}``;
- anything else (a list, a string, a number, null, an object that already has a reserved field) is
  wrapped: ``{"_rpq_key": KEY, "_rpq_input": VALUE}`` (an output: ``"_rpq_output"``).

So a handler that ignores unknown fields works unchanged, and the wrapped form is never ambiguous. Pure
standard library: this module runs inside workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["INPUT_FIELD", "KEY_FIELD", "NO_KEY", "OUTPUT_FIELD", "add_key", "split_key"]

KEY_FIELD: Final = "_rpq_key"
INPUT_FIELD: Final = "_rpq_input"
OUTPUT_FIELD: Final = "_rpq_output"
_RESERVED: Final = frozenset({KEY_FIELD, INPUT_FIELD, OUTPUT_FIELD})


class _NoKey:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_KEY"


#: ``split_key``'s answer for a value that carries no key.
NO_KEY: Final = _NoKey()


def add_key(value: Any, key: Any, field: str = INPUT_FIELD) -> dict[str, Any]:
    """``value`` carrying ``key``: merged into an object without reserved fields, otherwise wrapped."""
    if isinstance(value, dict) and not _RESERVED.intersection(value):
        return {**value, KEY_FIELD: key}
    return {KEY_FIELD: key, field: value}


def split_key(value: Any, field: str = INPUT_FIELD) -> tuple[Any, Any]:
    """(key, the value without it), the inverse of ``add_key``; ``(NO_KEY, value)`` when it has none."""
    if not isinstance(value, Mapping) or KEY_FIELD not in value:
        return NO_KEY, value
    rest = {name: item for name, item in value.items() if name != KEY_FIELD}
    if rest.keys() == {field}:
        return value[KEY_FIELD], rest[field]
    return value[KEY_FIELD], rest
