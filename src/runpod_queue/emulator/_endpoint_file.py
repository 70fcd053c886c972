"""Endpoints defined by data: one endpoint's fields (`PUT /_emulator/endpoints/{id}`) and a whole file of
them (`rpq serve --config endpoints.toml`, TOML or JSON).

An endpoint takes `handler` (a reference as `rpq serve FILE` takes one), `script` (canned answers, see
`scripted`), neither (fed only by external workers), `workers` and `return_aggregate_stream`. A file is

```toml
[endpoints.echo]
handler = "handlers.py:echo"
workers = 2

[endpoints.llm.script]
[[endpoints.llm.script.answers]]
output = {text = "hello"}
delay = 0.5
```

or the same as JSON (`{"endpoints": {"echo": {...}}}`). A mistake is one line naming the file, the line
and the field: ``endpoints.toml:7: endpoints.llm.script.answers[0].delay: must be a number ...``.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Final

from runpod_queue.emulator._config import EndpointSpec
from runpod_queue.emulator._scripted import FieldError, ScriptedHandler, parse_script
from runpod_queue.errors import ConfigurationError

__all__ = ["ConfigFileError", "load_endpoints_file", "parse_endpoint"]

ENDPOINT_FIELDS: Final = ("handler", "script", "replay", "on_miss", "workers", "return_aggregate_stream")
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ConfigFileError(ConfigurationError):
    """An endpoints file that cannot be used; the message is one line: file, line, field, what to fix."""


def parse_endpoint(endpoint_id: str, data: Any, *, base: Path | None = None) -> EndpointSpec:
    """The `EndpointSpec` `data` describes; `FieldError` (its path relative to the endpoint) if wrong.

    Args:
        endpoint_id: The endpoint's id (for the handler loader's messages).
        data: The endpoint's table / JSON object.
        base: The directory a relative handler path is read from (the config file's); None: the
            working directory.
    """
    from runpod_queue.emulator._loading import HandlerLoadError, load_endpoint

    if not isinstance(data, dict):
        raise FieldError((), f"an endpoint is a table/object of {', '.join(ENDPOINT_FIELDS)}; got {data!r}")
    unknown = sorted(data.keys() - set(ENDPOINT_FIELDS))
    if unknown:
        raise FieldError((unknown[0],), f"unknown field; an endpoint takes {', '.join(ENDPOINT_FIELDS)}")
    workers = data.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise FieldError(("workers",), f"must be an integer >= 0, got {workers!r}")
    aggregate = data.get("return_aggregate_stream", False)
    if not isinstance(aggregate, bool):
        raise FieldError(("return_aggregate_stream",), f"must be true or false, got {aggregate!r}")
    reference, script = data.get("handler"), data.get("script")
    if reference is not None and script is not None:
        raise FieldError(("script",), "give a handler or a script, not both")
    if data.get("replay") is not None or data.get("on_miss") is not None:
        return _replayed(endpoint_id, data, base, workers, aggregate)
    if script is not None:
        handler = ScriptedHandler(parse_script(script))
        return EndpointSpec(handler=handler, workers=workers, return_aggregate_stream=aggregate)
    if reference is None:
        return EndpointSpec(handler=None, workers=workers, return_aggregate_stream=aggregate)
    if not isinstance(reference, str) or not reference:
        raise FieldError(("handler",), f'must be a reference such as "handlers.py:echo", got {reference!r}')
    if base is not None and not Path(reference.partition(":")[0]).is_absolute() and ".py" in reference:
        reference = str(base / reference)
    try:
        loaded = load_endpoint(f"{endpoint_id}={reference}")
    except HandlerLoadError as exc:
        raise FieldError(("handler",), str(exc)) from None
    return EndpointSpec(
        handler=loaded.spec.handler,
        workers=workers,
        return_aggregate_stream=aggregate or loaded.spec.return_aggregate_stream,
    )


def _replayed(
    endpoint_id: str, data: dict[str, Any], base: Path | None, workers: int | None, aggregate: bool
) -> EndpointSpec:
    """`replay = "cassette.jsonl"` (with `on_miss`, and a `handler` for the misses)."""
    from runpod_queue.emulator._cassette import Cassette, ReplayHandler

    replay, on_miss = data.get("replay"), data.get("on_miss")
    if data.get("script") is not None:
        raise FieldError(("script",), "give a script or a replay cassette, not both")
    if not isinstance(replay, str) or not replay:
        raise FieldError(
            ("replay",), f'must be a cassette file written by rpq record ("c.jsonl"), got {replay!r}'
        )
    if on_miss is not None and on_miss not in ("error", "nearest", "handler"):
        raise FieldError(("on_miss",), f"must be one of error, nearest, handler, got {on_miss!r}")
    path = Path(replay)
    if base is not None and not path.is_absolute():
        path = base / path
    fallback = None
    if data.get("handler") is not None:
        fallback = parse_endpoint(endpoint_id, {"handler": data["handler"]}, base=base).handler
    try:
        cassette = Cassette.load(path, on_miss=on_miss)
        handler = ReplayHandler(cassette, fallback=fallback)
        handler.bind_check(endpoint_id)
    except ConfigurationError as exc:
        raise FieldError(("replay",), str(exc)) from None
    return EndpointSpec(handler=handler, replay=cassette, workers=workers, return_aggregate_stream=aggregate)


def load_endpoints_file(path: str | Path) -> dict[str, EndpointSpec]:
    """Every endpoint of a TOML (``.toml``) or JSON (any other name) file, by id.

    Raises:
        ConfigFileError: Unreadable, not TOML/JSON, or a field wrong (one line: file, line, field).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{file}: cannot read the endpoints file: {exc}") from None
    is_toml = file.suffix.lower() == ".toml"
    try:
        data = tomllib.loads(text) if is_toml else json.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"line (\d+)", str(exc))
        raise ConfigFileError(f"{file}:{where.group(1) if where else 1}: not valid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"{file}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    try:
        return _endpoints(data, file.parent)
    except FieldError as exc:
        line = locate(text, exc.path, toml=is_toml)
        raise ConfigFileError(f"{file}:{line}: {exc}") from None


def _endpoints(data: Any, base: Path) -> dict[str, EndpointSpec]:
    if not isinstance(data, dict) or set(data) != {"endpoints"} or not isinstance(data["endpoints"], dict):
        extra = sorted(data) if isinstance(data, dict) else []
        raise FieldError(
            tuple(x for x in extra[:1] if x != "endpoints"),
            "the file holds one table, endpoints, with one entry per endpoint id ([endpoints.ID] in "
            'TOML, {"endpoints": {"ID": {...}}} in JSON)',
        )
    specs: dict[str, EndpointSpec] = {}
    if not data["endpoints"]:
        raise FieldError(("endpoints",), "no endpoint defined: add [endpoints.ID] with a handler or script")
    for endpoint_id, fields in data["endpoints"].items():
        where = ("endpoints", endpoint_id)
        if not _ENDPOINT_ID.match(endpoint_id):
            raise FieldError(where, "invalid endpoint id: use letters, digits, '-', '_' or '.'")
        try:
            specs[endpoint_id] = parse_endpoint(endpoint_id, fields, base=base)
        except FieldError as exc:
            raise FieldError((*where, *exc.path), exc.message) from None
    return specs


def locate(text: str, path: tuple[str | int, ...], *, toml: bool) -> int:
    """The line (1-based) of the field `path` names in `text`, as near as the text shows it.

    tomllib and json give no positions for a value that parses but is wrong, so this follows the path
    through the text: a key is its next occurrence (as `key =`, `"key":` or in a `[table.key]` header);
    an index is the n-th `[[…key]]` header (TOML) or the n-th element of the `[...]` after the key.
    """
    pos = 0
    previous: re.Pattern[str] | None = None
    header = False
    for part in path:
        if isinstance(part, int):
            if header and previous is not None:  # [[a.b.answers]] tables: the n-th header
                for _ in range(part):
                    found = previous.search(text, pos + 1)
                    if found is None:
                        break
                    pos = found.start()
            else:
                pos = _element(text, pos, part)
            continue
        key = re.escape(part)
        word = rf'"?(?<![\w-]){key}(?![\w-])"?'
        previous = re.compile(
            rf"(?m)(?:^[ \t]*{word}[ \t]*=|\"{key}\"[ \t]*:|[{{,][ \t]*{word}[ \t]*="
            rf"|^[ \t]*\[\[?[^\]\n]*{word}[ \t]*[.\]])"
        )
        found = previous.search(text, pos)
        if found is None:
            break
        pos = found.start()
        header = toml and found.group(0).lstrip().startswith("[[") and found.group(0).endswith("]")
    return text.count("\n", 0, pos) + 1


def _element(text: str, pos: int, index: int) -> int:
    """Where the `index`-th element of the first `[...]` list at or after `pos` starts."""
    start = text.find("[", pos)
    if start < 0:
        return pos
    depth, i, element, quote = 0, start, 0, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth == 2 and element == index:
                return i
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                break
        elif ch == "," and depth == 1:
            element += 1
        elif depth == 1 and element == index and not ch.isspace():
            return i
        i += 1
    return start
