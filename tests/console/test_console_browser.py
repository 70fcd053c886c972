"""The console in a real headless Chromium: key, live updates, a job's page, cancel, validation, and a
measurement at 10,000 retained jobs with 100 jobs/s flowing (printed, never asserted: run with -s).

CI installs Debian's `chromium` (`.ci/run`); without it the test fails under CI and is skipped, saying
why, elsewhere. `RPQ_CONSOLE_SCREENSHOT=docs/console.png` also writes the screenshot there.
"""

# The scenario's loop drives only the browser; blocking calls to the emulator (its own thread) are fine.
# ruff: noqa: ASYNC210, ASYNC212, ASYNC240
from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cdp_support import Page, find_chromium

from runpod_queue.emulator import Emulator

KEY = "console-browser-key-7f3e"
GATE = threading.Event()


def echo(job: dict[str, Any]) -> Any:
    return {"echo": job["input"]}


def gated(job: dict[str, Any]) -> Any:
    """Runs until the test opens GATE, so the page can be seen showing IN_PROGRESS first."""
    GATE.wait(20)
    return {"done": job["input"]}


async def slow(job: dict[str, Any]) -> Any:
    await asyncio.sleep(30)  # cancelled by the test through the page
    return {"slow": True}


def tokens(job: dict[str, Any]) -> Any:
    yield from ["Hel", "lo"]


def fail(job: dict[str, Any]) -> Any:
    raise ValueError("input needs a 'prompt'")


CHROMIUM = find_chromium()
pytestmark = pytest.mark.timeout(120)


def _skip_or_fail() -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on this machine (as root: apt-get install -y chromium; .ci/run does)")


def row_status(job_id: str) -> str:
    return f"(document.querySelector('#jobs tr[data-id=\"{job_id}\"]') || {{}}).dataset?.status"


def test_console_in_a_browser(tmp_path: Path) -> None:
    _skip_or_fail()
    assert CHROMIUM is not None
    GATE.clear()
    endpoints = {"echo": echo, "gated": gated, "slow": slow, "tokens": tokens, "fail": fail}
    with Emulator(endpoints, api_key=KEY, workers=2, rate_limits=False) as emu:
        try:
            asyncio.run(_scenario(emu, tmp_path))
        finally:
            GATE.set()


async def _scenario(emu: Emulator, tmp_path: Path) -> None:
    api = httpx.Client(base_url=emu.base_url, headers={"authorization": f"Bearer {KEY}"})
    assert CHROMIUM is not None
    page = await Page(CHROMIUM).start()
    try:
        await page.navigate(emu.root_url + "/")
        # No key yet: the data routes answered 401 and the page asks for the key.
        await page.wait_for("document.querySelector('#key-dialog').open", "the API key dialog")
        await page.eval(
            f"document.querySelector('#key-input').value = {KEY!r};"
            "document.querySelector('#key-save').click()"
        )
        await page.wait_for("window.rpqConsole.mode.startsWith('live')", "live updates over SSE")
        assert await page.eval("sessionStorage.getItem('rpq-console-key')") == KEY
        await page.eval("window.noReload = 1")  # gone if the page ever reloads

        # A job submitted from the page's editor appears and turns COMPLETED live.
        await page.eval(
            "{ const s = document.querySelector('#submit-endpoint'); s.value = 'gated';"
            "const b = document.querySelector('#submit-body');"
            'b.value = \'{"input": {"msg": "from the browser"}}\';'
            "b.dispatchEvent(new Event('input')); document.querySelector('#submit-go').click() }"
        )
        toast = await page.wait_for(
            "Array.from(document.querySelectorAll('#toast div')).map(d => d.textContent)"
            ".find(t => t.startsWith('queued job ')) || ''",
            "the queued job's id",
        )
        job_id = toast.split()[2]
        await page.wait_for(f"{row_status(job_id)} === 'IN_PROGRESS'", "the job IN_PROGRESS")
        GATE.set()
        await page.wait_for(f"{row_status(job_id)} === 'COMPLETED'", "the job turning COMPLETED")
        assert await page.eval("window.noReload") == 1

        # Each endpoint's card lists its fleet by REST v2 status; a worker's logs open from there.
        statuses = await page.wait_for(
            "Array.from(document.querySelectorAll('article[data-endpoint=\"echo\"] .fleet-workers li'))"
            ".map(li => li.dataset.status).join(',')",
            "the echo endpoint's workers",
        )
        assert statuses == "IDLE,IDLE"
        assert "fleet — 2 ready, fixed · 2 idle" in await page.eval(
            "document.querySelector('article[data-endpoint=\"echo\"] .fleet-head').textContent"
        )
        # Folded by default; unfolded, it stays so across the page's updates.
        fleet = "document.querySelector('article[data-endpoint=\"echo\"] details.fleet')"
        assert await page.eval(f"{fleet}.open") is False
        await page.eval(f"{fleet}.querySelector('summary').click()")
        renders = await page.eval("window.rpqConsole.renders")
        await page.wait_for(f"window.rpqConsole.renders > {renders} + 1", "two more updates")
        assert await page.eval(f"{fleet}.open") is True
        worker = api.get(f"/gated/status/{job_id}").json()["workerId"]
        await page.eval(
            f'document.querySelector(\'article[data-endpoint="gated"] li[data-worker="{worker}"]'
            " button.logs').click()"
        )
        logs = await page.wait_for(
            f"(document.querySelector('#logs-lines').textContent.includes('job {job_id} ended: COMPLETED')"
            " && document.querySelector('#logs-lines').textContent) || ''",
            "the worker's log lines",
        )
        assert f"job {job_id} started" in logs and "#/" in await page.eval("location.hash || '#/'")
        await page.eval("document.querySelector('#logs-close').click()")
        assert await page.eval("document.querySelector('#logs-panel').hidden") is True

        # Its page shows its output and its history.
        await page.eval(f"document.querySelector('#jobs tr[data-id=\"{job_id}\"] a').click()")
        output = await page.wait_for("document.querySelector('#job-output').textContent", "the job's output")
        assert '"msg": "from the browser"' in output and '"done"' in output
        history = await page.eval(
            "Array.from(document.querySelectorAll('#job-history td.status')).map(t => t.textContent)"
        )
        assert history == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]

        # A failed job's page shows its parsed error.
        failed = api.post("/fail/runsync", json={"input": {}}).json()
        await page.eval(f"location.hash = '#/job/fail/{failed['id']}'")
        await page.wait_for(
            "document.querySelector('#job-error-type').textContent.includes('ValueError')",
            "the error's type",
        )
        message = await page.eval("document.querySelector('#job-error-message').textContent")
        assert message == "input needs a 'prompt'"
        assert "Traceback" in await page.eval("document.querySelector('#job-error-trace').textContent")
        # Retry from its page: the same job id runs again and its history shows both attempts.
        await page.eval("document.querySelector('#job-actions button.retry').click()")
        await page.wait_for(
            "document.querySelectorAll('#job-history td.status').length === 6", "the retried attempt"
        )
        assert api.get(f"/fail/status/{failed['id']}").json()["status"] == "FAILED"

        # A streamed job's chunks stay visible after /stream handed them out.
        streamed = api.post("/tokens/runsync", json={"input": {}}).json()
        assert api.get(f"/tokens/stream/{streamed['id']}").json()["stream"]
        await page.eval(f"location.hash = '#/job/tokens/{streamed['id']}'")
        chunks = await page.wait_for(
            "Array.from(document.querySelectorAll('#job-chunks li')).map(l => l.textContent).join('|')",
            "the stream chunks",
        )
        assert chunks == '"Hel"|"lo"'

        # Cancel a running job from the jobs table: the API says CANCELLED and so does the page.
        await page.eval("location.hash = '#/'")
        running = api.post("/slow/run", json={"input": {"n": 1}}).json()["id"]
        await page.wait_for(f"{row_status(running)} === 'IN_PROGRESS'", "the slow job running")
        await page.eval(f"document.querySelector('#jobs tr[data-id=\"{running}\"] button.cancel').click()")
        await page.wait_for(f"{row_status(running)} === 'CANCELLED'", "the cancelled job")
        assert api.get(f"/slow/status/{running}").json()["status"] == "CANCELLED"

        # Filtering by status: the stream reopens with the filter and only matching rows remain.
        await page.eval(
            "{ const f = document.querySelector('#filter-status'); f.value = 'CANCELLED';"
            " f.dispatchEvent(new Event('change')) }"
        )
        await page.wait_for(
            "(() => { const rows = Array.from(document.querySelectorAll('#jobs tbody tr'));"
            " return rows.length > 0 && rows.every(r => r.dataset.status === 'CANCELLED') })()",
            "only CANCELLED rows",
        )
        assert await page.eval(f"{row_status(running)}") == "CANCELLED"
        await page.eval(
            "{ const f = document.querySelector('#filter-status'); f.value = '';"
            " f.dispatchEvent(new Event('change')) }"
        )

        # The editor refuses what the API would refuse, before sending.
        await page.eval(
            "{ const b = document.querySelector('#submit-body'); b.value = '{\"input\": [1,'; "
            "b.dispatchEvent(new Event('input')) }"
        )
        assert await page.eval("document.querySelector('#submit-go').disabled") is True
        assert "not valid JSON" in await page.eval("document.querySelector('#submit-check').textContent")
        await page.eval(
            "{ const b = document.querySelector('#submit-body');"
            ' b.value = \'{"input": {"prompt": "hi"}}\'; b.dispatchEvent(new Event("input")) }'
        )
        assert await page.eval("document.querySelector('#submit-go').disabled") is False

        # The key went in headers only: no URL the page loaded carries it.
        urls = await page.eval(
            "[location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
        )
        assert urls and not any(KEY in url for url in urls)

        await _measure(emu, page, tmp_path / "console.png")
        # Purge the slow endpoint's backlog from its card (the page asks first: say yes).
        assert api.get("/slow/health").json()["jobs"]["inQueue"] > 0
        await page.eval(
            "window.confirm = () => true;"
            "document.querySelector('article[data-endpoint=\"slow\"] button.purge').click()"
        )
        await page.wait_for(
            "document.querySelector('article[data-endpoint=\"slow\"] .in-queue b').textContent === '0'",
            "the purged queue",
        )
        assert api.get("/slow/health").json()["jobs"]["inQueue"] == 0
        await _virtual_clock(page)
        assert page.console_errors == []
    finally:
        await page.close()
        api.close()


async def _virtual_clock(page: Page) -> None:
    """On a virtual clock the header shows virtual time, and its advance control moves it; without the
    event stream the page polls."""
    with Emulator({"echo": echo}, clock="virtual") as emu:  # no key: the page asks for none
        job = httpx.post(emu.base_url + "/echo/run", json={"input": {}}).json()["id"]
        # The event stream never gets through here: the page falls back to polling snapshots.
        await page.block("/_console/api/events")
        await page.navigate(emu.root_url + "/")
        await page.wait_for("window.rpqConsole.mode.startsWith('polling')", "the polling fallback")
        await page.wait_for(f"{row_status(job)} === 'COMPLETED'", "a job shown while polling")
        await page.wait_for(
            "document.querySelector('#clock').textContent.startsWith('virtual clock')", "virtual time"
        )
        await page.eval(
            "{ document.querySelector('#advance-seconds').value = '90';"
            " document.querySelector('#advance button').click() }"
        )
        await page.wait_for(
            "document.querySelector('#clock').textContent.endsWith('1m 30.0s')", "the advanced clock"
        )
        assert emu.now == 90


async def _measure(emu: Emulator, page: Page, shot: Path) -> None:
    """10,000 retained jobs and 100 jobs/s over four endpoints: page load, update rate and render cost,
    printed (never asserted); then the screenshot, of a console with a few endpoints busy."""
    core = emu.core
    endpoints = core.endpoints

    async def fill() -> None:
        for i in range(10_000):
            core.submit(endpoints["echo"], {"i": i})

    emu.call(fill)
    stop = threading.Event()
    # Every 0.1 s, on the emulator's loop: 6 echo, 2 tokens, 1 failing, 1 slow (a growing backlog).
    mix = [("echo", 6), ("tokens", 2), ("fail", 1), ("slow", 1)]

    async def flow() -> None:
        while not stop.is_set():
            for name, count in mix:
                for i in range(count):
                    core.submit(endpoints[name], {"flow": i})
            await asyncio.sleep(0.1)

    async def snapshot_ms() -> float:
        console = emu.app.console
        assert console is not None
        start = time.perf_counter()
        for _ in range(20):
            console.snapshot({})
        return (time.perf_counter() - start) / 20 * 1000

    loop = emu.app.loop
    assert loop is not None
    flowing = asyncio.run_coroutine_threadsafe(flow(), loop)
    try:
        await page.eval("location.hash = '#/'")
        await page.send("Page.reload")  # the key stays in sessionStorage: no dialog this time
        load_ms = await page.wait_for("window.rpqConsole.loadMs", "a first render at 10,000 jobs")
        before = json.loads(await page.eval("JSON.stringify(window.rpqConsole)"))
        await asyncio.sleep(3)
        after = await page.eval("window.rpqConsole")
        table = await page.eval("document.querySelector('#jobs-count').textContent")
        # With 100 rows listed, the submit form is still on the first screen, above the list.
        form, jobs, screen = await page.eval(
            "window.scrollTo(0, 0); [document.querySelector('#submit-form').getBoundingClientRect().bottom,"
            " document.querySelector('#jobs').getBoundingClientRect().top, window.innerHeight]"
        )
        server_ms = emu.call(snapshot_ms)
        await page.screenshot(shot)
    finally:
        stop.set()
        flowing.result(5)
    renders = after["renders"] - before["renders"]
    assert renders > 0, "the page stopped updating under load"
    assert not await page.eval("document.querySelector('#key-dialog').open")
    assert "of 1" in table  # "newest 100 of 10xxx retained"
    assert form < jobs and form <= screen, (form, jobs, screen)
    assert shot.stat().st_size > 10_000
    if os.environ.get("RPQ_CONSOLE_SCREENSHOT"):
        shutil.copy(shot, os.environ["RPQ_CONSOLE_SCREENSHOT"])
    render_avg = (after["renderMsTotal"] - before["renderMsTotal"]) / renders
    retained = sum(len(ep.jobs) for ep in endpoints.values())
    print(
        f"\nconsole at {retained} retained jobs, 100 jobs/s: page load (navigation to first render) "
        f"{load_ms:.0f} ms; {renders / 3:.1f} updates/s ({after['mode']}); render avg {render_avg:.1f} ms, "
        f"max {after['renderMsMax']:.1f} ms; server snapshot {server_ms:.1f} ms; table: {table}"
    )
