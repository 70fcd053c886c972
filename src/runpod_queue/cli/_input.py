"""A job's INPUT as the user gives it: inline JSON, ``@file.json``, or ``-`` for stdin."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runpod_queue.cli._errors import UsageProblem

__all__ = ["parse_input"]

_EXAMPLE = '\'{"prompt": "hi"}\''


def parse_input(text: str, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """INPUT as inline JSON, ``@file.json``, or ``-`` for stdin; a bad one names where it breaks.

    ``warn`` hears about an INPUT that looks like a whole RunPod request body (its only key is
    ``input``): copied from RunPod's docs, it would reach the handler wrapped twice, without an error.
    """
    if text == "-":
        source, raw = "stdin", sys.stdin.read()
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageProblem(f"cannot read input file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageProblem(f"input file {path} is not UTF-8 text") from None
        source = str(path)
    else:
        source, raw = "INPUT", text
    if not raw.strip():
        raise UsageProblem(f"{source} is empty: give a JSON value, e.g. {_EXAMPLE}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageProblem(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} (char {exc.pos})"
        ) from None
    if not isinstance(value, dict):
        # RunPod refuses anything else with a 400; saying so here makes it a usage error (exit 2).
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number"
        )
        raise UsageProblem(
            f"{source} must be a JSON object (the handler's input), got {kind}: e.g. {_EXAMPLE}"
        )
    if warn is not None and list(value) == ["input"]:
        warn(
            f'warning: {source} is a whole request body ({{"input": ...}}), but INPUT is the input itself '
            '(rpq sends {"input": INPUT}): the handler gets job["input"]["input"]; give the inner object'
        )
    return value
