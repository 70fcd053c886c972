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
- `GET /_emulator/s3`: the embedded S3 (`rpq serve --s3`) as RunPod's `s3Config` object
  (`endpointUrl`, `bucketName`, `accessId`, `accessSecret`: moto's fixed local stand-ins, which it accepts
  with any value, never a real credential), so `rpq upload --local`, `rpq worker-env` and `rpq batch
  --local` reach it; 404 when the emulator serves no S3.
- `POST /_emulator/reset`, `GET|PUT /_emulator/faults`, `GET /_emulator/endpoints`,
  `GET|PUT|DELETE /_emulator/endpoints/{id}`: see `admin` (what they do) and docs/local-runpod.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from runpod_queue._models import S3Config
from runpod_queue.emulator._admin import (
    Admin,
    endpoint_dict,
    faults_dict,
    faults_from_dict,
    spec_from_dict,
)
from runpod_queue.emulator._clock import Clock
from runpod_queue.emulator._config import Faults
from runpod_queue.emulator._http import HTTPError, Request, Route, json_object, type_name
from runpod_queue.emulator._inspect import RequestLog, job_views
from runpod_queue.emulator._jobs import encode_json

if TYPE_CHECKING:
    from runpod_queue.emulator._core import Core

__all__ = ["Control"]

_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # as `rpq serve ID=...` takes one


class Control:
    """Serves `/_emulator/<name>`."""

    def __init__(
        self,
        clock: Clock,
        core: Core,
        requests: RequestLog,
        *,
        admin: Admin | None = None,
        faults: tuple[Callable[[], Faults], Callable[[Faults], None]] | None = None,
    ) -> None:
        self.clock = clock
        self.core = core
        self.requests = requests
        self.admin: Admin | None = admin
        self._faults = faults
        self._s3: Callable[[], S3Config | None] | None = None
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "advance"): self.advance,
            ("GET", "jobs"): self.jobs,
            ("GET", "requests"): self.list_requests,
            ("DELETE", "requests"): self.clear_requests,
            ("GET", "s3"): self.get_s3,
        }
        if admin is not None:
            self.routes[("POST", "reset")] = self.reset
            self.routes[("GET", "endpoints")] = self.list_endpoints
            self.routes[("POST", "snapshot")] = self.snapshot
        if faults is not None:
            self.routes[("GET", "faults")] = self.get_faults
            self.routes[("PUT", "faults")] = self.put_faults
        # `/_emulator/endpoints/{id}`
        self.item_routes: dict[str, Route] = (
            {"GET": self.get_endpoint, "PUT": self.put_endpoint, "DELETE": self.delete_endpoint}
            if admin is not None
            else {}
        )

    async def handle(self, request: Request) -> tuple[int, Any]:
        """Route `/_emulator/<name>` (`request.rest` is `[name]`, or `["endpoints", id]`)."""
        if len(request.rest) == 2 and request.rest[0] == "endpoints" and self.item_routes:
            item_route = self.item_routes.get(request.method)
            if item_route is None:
                allowed = " or ".join(sorted(self.item_routes))
                raise HTTPError(405, f"/_emulator/endpoints/<id> takes {allowed}, not {request.method}")
            return await item_route(request)
        name = request.rest[0] if len(request.rest) == 1 else ""
        route = self.routes.get((request.method, name))
        if route is not None:
            return await route(request)
        methods = sorted(m for m, n in self.routes if n == name)
        if methods:
            raise HTTPError(405, f"/_emulator/{name} takes {' or '.join(methods)}, not {request.method}")
        known = ", ".join(sorted(f"{m} /_emulator/{n}" for m, n in self.routes))
        if self.item_routes:
            known += ", GET|PUT|DELETE /_emulator/endpoints/<id>"
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

    def serve_s3(self, config: Callable[[], S3Config | None]) -> None:
        """Answer ``GET /_emulator/s3`` with ``config()`` (None: this emulator serves no S3)."""
        self._s3 = config

    async def get_s3(self, request: Request) -> tuple[int, Any]:
        """``GET /_emulator/s3``: the embedded S3's ``s3Config`` (404 without one)."""
        config = self._s3() if self._s3 is not None else None
        if config is None:
            raise HTTPError(404, "this emulator serves no S3: start it with `rpq serve --s3`")
        return 200, config.to_wire()

    # -- run-time changes (admin) ---------------------------------------------------------------

    def _admin(self) -> Admin:
        assert self.admin is not None  # the routes exist only with an admin
        return self.admin

    async def reset(self, request: Request) -> tuple[int, Any]:
        """``POST /_emulator/reset``: every job, request, webhook attempt and counter gone; clock at 0."""
        await self._admin().reset()
        return 200, {"reset": True, "now": self.clock.now(), "endpoints": sorted(self.core.endpoints)}

    async def snapshot(self, request: Request) -> tuple[int, Any]:
        """``POST /_emulator/snapshot`` ``{"path": "fixture.db"}``: a consistent copy of the state in a
        file on the server's machine (relative to its working directory); 409 if it exists, unless
        ``"overwrite": true``."""
        data = json_object(await request.body(10_000, "/_emulator/snapshot"), '{"path": "fixture.db"}')
        unknown = sorted(data.keys() - {"path", "overwrite"})
        path, overwrite = data.get("path"), data.get("overwrite", False)
        if unknown or not isinstance(path, str) or not path:
            raise HTTPError(
                400,
                'send {"path": "FILE"} (a file the server writes, relative to its working directory) and '
                f'optionally "overwrite": true; got fields {sorted(data)}',
            )
        if not isinstance(overwrite, bool):
            raise HTTPError(
                400, f'"overwrite" must be true or false, got {type_name(overwrite)} {overwrite!r}'
            )
        try:
            return 201, self._admin().snapshot(path, overwrite=overwrite)
        except FileExistsError as exc:
            raise HTTPError(409, f'{exc} (send "overwrite": true)') from None
        except OSError as exc:
            raise HTTPError(400, str(exc)) from None

    async def get_faults(self, request: Request) -> tuple[int, Any]:
        """``GET /_emulator/faults``: the fault injection in force."""
        assert self._faults is not None
        return 200, faults_dict(self._faults[0]())

    async def put_faults(self, request: Request) -> tuple[int, Any]:
        """``PUT /_emulator/faults``: replace fault injection; fields left out are off."""
        assert self._faults is not None
        data = json_object(await request.body(10_000, "/_emulator/faults"), '{"error_503": 0.5, "seed": 1}')
        faults = faults_from_dict(data)
        self._faults[1](faults)
        return 200, faults_dict(faults)

    async def list_endpoints(self, request: Request) -> tuple[int, Any]:
        """``GET /_emulator/endpoints``: every endpoint served, sorted by id."""
        endpoints = self.core.endpoints
        return 200, {"endpoints": [endpoint_dict(endpoints[e]) for e in sorted(endpoints)]}

    def _endpoint_id(self, request: Request) -> str:
        endpoint_id = request.rest[1]
        if not _ENDPOINT_ID.match(endpoint_id):
            raise HTTPError(
                400, f"invalid endpoint id {endpoint_id!r}: use letters, digits, '-', '_' or '.' (max 128)"
            )
        return endpoint_id

    async def get_endpoint(self, request: Request) -> tuple[int, Any]:
        """``GET /_emulator/endpoints/{id}``: one endpoint (404 when not served)."""
        endpoint_id = self._endpoint_id(request)
        ep = self.core.endpoints.get(endpoint_id)
        if ep is None:
            raise HTTPError(404, f"endpoint {endpoint_id!r} not found; create it with PUT")
        return 200, endpoint_dict(ep)

    async def put_endpoint(self, request: Request) -> tuple[int, Any]:
        """``PUT /_emulator/endpoints/{id}``: create (201) or change (200) an endpoint."""
        endpoint_id = self._endpoint_id(request)
        data = json_object(
            await request.body(1_000_000, "/_emulator/endpoints/<id>"), '{"handler": "handlers.py:echo"}'
        )
        spec = spec_from_dict(endpoint_id, data)
        created = self._admin().put_endpoint(endpoint_id, spec)
        return (201 if created else 200), endpoint_dict(self.core.endpoints[endpoint_id])

    async def delete_endpoint(self, request: Request) -> tuple[int, Any]:
        """``DELETE /_emulator/endpoints/{id}``: remove an endpoint and drop its jobs."""
        endpoint_id = self._endpoint_id(request)
        if endpoint_id not in self.core.endpoints:
            raise HTTPError(
                404,
                f"endpoint {endpoint_id!r} not found (this emulator serves: "
                f"{', '.join(sorted(self.core.endpoints)) or 'none'})",
            )
        self._admin().remove_endpoint(endpoint_id)
        return 200, {"removed": endpoint_id}


def _encoded(view: dict[str, Any]) -> orjson.Fragment:
    """One job's view, encoded on its own: a handler's output nested near orjson's 254-level limit may
    not fit inside the listing, and one such job must not make the whole route fail. Its input/output
    are then replaced by a note saying why."""
    try:
        return orjson.Fragment(encode_json(view))
    except (TypeError, ValueError, RecursionError):
        note = "(not shown: nested too deep to encode here; see this job's /status)"
        return orjson.Fragment(encode_json({**view, "input": note, "output": note}))
