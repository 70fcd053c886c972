"""Warm before a batch: `BatchRunner(…, warm=N)` raises the endpoint's `workersMin` to N for the run and
puts the previous value back after it.

Through RunPod's management API (REST v2 `PATCH /serverless/{id}`, base URL as `Endpoint.diagnose` finds
it), sent on the runner's own client with the user's retries. The previous minimum is written to the
journal (meta `warm_previous_min`) *before* the PATCH, so whatever ends the run — its end, Ctrl-C, an
error, or a crash that skips every `finally` — the value to restore is known: `end()` restores it and
clears the record, and a later run on the same journal (a resume, with or without `warm`) that finds
the record restores it when it ends. A minimum already at or above N is left alone (nothing recorded).
A restore that fails is a warning naming the command that finishes it; the record stays for the next
run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from runpod_queue._aio import AsyncClient
from runpod_queue._attempts import AttemptRules, attempts
from runpod_queue._diagnosis import management_url_for
from runpod_queue._management import _call_patch, _calls_get, _patch_body
from runpod_queue._management_models import EndpointInfo, parse_endpoint
from runpod_queue._retry import Retries
from runpod_queue.batch._journal import Journal
from runpod_queue.errors import ConfigurationError, RunpodQueueError

__all__ = ["WARM_META", "Warm"]

WARM_META = "warm_previous_min"


class Warm:
    """One run's raise and restore of `workersMin` (`want` None: only restore what a crashed run left)."""

    def __init__(
        self,
        client: AsyncClient,
        retries: Retries,
        endpoint_id: str,
        journal: Journal,
        want: int | None,
        warn: Callable[[str], object],
    ) -> None:
        settings = dataclasses.replace(
            client._settings, base_url=management_url_for(client._settings.base_url), retries=retries
        )
        self._client = client
        self._rules = AttemptRules.of(settings)
        self._endpoint_id = endpoint_id
        self._journal = journal
        self._want = want
        self._warn = warn

    async def _get(self) -> EndpointInfo:
        answer = await self._client._run(attempts(_calls_get(self._endpoint_id), self._rules))
        return parse_endpoint(answer)

    async def _set_min(self, value: int) -> EndpointInfo:
        body = _patch_body(value, None, None, None, None, None)
        answer = await self._client._run(attempts(_call_patch(self._endpoint_id, body), self._rules))
        return parse_endpoint(answer)

    async def begin(self) -> None:
        """Raise `workersMin` to `want`, recording the previous value first (a resume keeps the one a
        crashed run recorded: the current value is then the raised one)."""
        if self._want is None:
            return
        info = await self._get()
        if self._want > info.workers_max:
            raise ConfigurationError(
                f"warm={self._want} is above endpoint {self._endpoint_id}'s max workers "
                f"({info.workers_max}): lower it, or raise the max first (rpq endpoint scale "
                f"{self._endpoint_id} --max {self._want})"
            )
        if info.workers_min >= self._want:
            return  # already warm enough: nothing to raise, nothing to put back
        if self._journal.meta(WARM_META) is None:
            self._journal.set_meta(WARM_META, str(info.workers_min))
        await self._set_min(self._want)

    async def __aenter__(self) -> Warm:
        await self.begin()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.end()

    async def end(self) -> None:
        """Put back the recorded minimum, then forget the record; a failure is a warning, not an error
        (the run's own outcome stands), and the record stays for the next run on this journal."""
        recorded = self._journal.meta(WARM_META)
        if recorded is None:
            return
        previous = int(recorded)
        try:
            await self._set_min(previous)
        except RunpodQueueError as exc:
            self._warn(
                f"could not put endpoint {self._endpoint_id}'s workersMin back to {previous} ({exc}); "
                f"it stays raised until `rpq endpoint scale {self._endpoint_id} --min {previous}` or the "
                "next run on this journal"
            )
            return
        self._journal.delete_meta(WARM_META)
