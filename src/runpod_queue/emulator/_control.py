"""The emulator's own routes, under `/_emulator/`: operations on the emulator, not RunPod's API.

They need the same API key as the rest of the server, are never rate-limited or fault-injected, and
answer errors as `{"error": ...}` like every other route. `routes` maps (method, name) to a handler, so a
new route is one entry here.

- `POST /_emulator/advance` with `{"seconds": N}`: move a virtual clock forward (`Emulator.advance`);
  answers `{"now": <seconds since start on the clock>}`. A real clock answers 409.
- `GET /_emulator/jobs[?endpoint=ID]`: `{"jobs": [...]}`, every job the emulator still answers for
  (`inspect.JobView.to_dict`), in submission order per endpoint.
- `GET /_emulator/requests[?all=true]`: `{"requests": [...]}`, the API requests received, oldest first
  (`inspect.RecordedRequest.to_dict`; `all=true` adds worker-protocol and `/_emulator/*` requests).
  `DELETE /_emulator/requests` forgets them, so a test can assert on what follows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import orjson

from runpod_queue.emulator._clock import Clock
from runpod_queue.emulator._http import HTTPError, Request, Route, json_object, type_name
from runpod_queue.emulator._inspect import RequestLog, job_views
from runpod_queue.emulator._jobs import encode_json

if TYPE_CHECKING:
    from runpod_queue.emulator._core import Core

__all__ = ["Control"]


class Control:
    """Serves `/_emulator/<name>`."""

    def __init__(self, clock: Clock, core: Core, requests: RequestLog) -> None:
        self.clock = clock
        self.core = core
        self.requests = requests
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "advance"): self.advance,
            ("GET", "jobs"): self.jobs,
            ("GET", "requests"): self.list_requests,
            ("DELETE", "requests"): self.clear_requests,
        }

    async def handle(self, request: Request) -> tuple[int, Any]:
        """Route `/_emulator/<name>` (`request.rest` is `[name]`)."""
        name = request.rest[0] if len(request.rest) == 1 else ""
        route = self.routes.get((request.method, name))
        if route is not None:
            return await route(request)
        methods = sorted(m for m, n in self.routes if n == name)
        if methods:
            raise HTTPError(405, f"/_emulator/{name} takes {' or '.join(methods)}, not {request.method}")
        known = ", ".join(sorted(f"{m} /_emulator/{n}" for m, n in self.routes))
        raise HTTPError(404, f"no emulator route /_emulator/{'/'.join(request.rest)}; routes: {known}")

    async def advance(self, request: Request) -> tuple[int, Any]:
        """``POST /_emulator/advance?seconds=``: move a virtual clock forward (409 on a real one)."""
        if self.clock.kind == "real":
            raise HTTPError(
                409,
                "this emulator runs on the real clock, which cannot be advanced: start it with "
                "`rpq serve --clock virtual` (or --clock auto; Emulator(clock='virtual') in Python)",
            )
        data = json_object(await request.body(10_000, "/_emulator/advance"), '{"seconds": 10}')
        unknown = data.keys() - {"seconds"}
        if unknown or "seconds" not in data:
            raise HTTPError(
                400, f'send {{"seconds": N}} (N >= 0, a number of seconds); got fields {sorted(data)}'
            )
        value = data["seconds"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise HTTPError(
                400, f'"seconds" must be a number of seconds >= 0, got {type_name(value)} {value!r}'
            )
        try:
            return 200, {"now": await self.clock.advance(float(value))}
        except ValueError as exc:  # over 10 years, or a clock that would stop being finite
            raise HTTPError(400, str(exc)) from None

    async def jobs(self, request: Request) -> tuple[int, Any]:
        """``GET /_emulator/jobs[?endpoint=]``: every job the emulator still answers for."""
        endpoints = self.core.endpoints
        wanted = request.query.get("endpoint")
        if wanted is not None and wanted not in endpoints:
            known = ", ".join(sorted(endpoints)) or "none"
            raise HTTPError(404, f"endpoint {wanted!r} not found (this emulator serves: {known})")
        chosen = [endpoints[wanted]] if wanted is not None else [endpoints[e] for e in sorted(endpoints)]
        return 200, {"jobs": [_encoded(view.to_dict()) for ep in chosen for view in job_views(ep)]}

    async def list_requests(self, request: Request) -> tuple[int, Any]:
        """``GET /_emulator/requests[?all=true]``: the requests served, oldest first."""
        flag = request.query.get("all", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise HTTPError(400, f"?all= takes true or false, got {flag!r}")
        records = self.requests.records(api_only=flag in ("false", "0"))
        return 200, {"requests": [r.to_dict() for r in records]}

    async def clear_requests(self, request: Request) -> tuple[int, Any]:
        """``DELETE /_emulator/requests``: forget the requests served so far."""
        self.requests.clear()
        return 200, {"requests": []}


def _encoded(view: dict[str, Any]) -> orjson.Fragment:
    """One job's view, encoded on its own: a handler's output nested near orjson's 254-level limit may
    not fit inside the listing, and one such job must not make the whole route fail. Its input/output
    are then replaced by a note saying why."""
    try:
        return orjson.Fragment(encode_json(view))
    except (TypeError, ValueError, RecursionError):
        note = "(not shown: nested too deep to encode here; see this job's /status)"
        return orjson.Fragment(encode_json({**view, "input": note, "output": note}))
