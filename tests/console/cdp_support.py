"""A headless Chromium driven over the DevTools protocol: just what the console's browser test needs.

No Selenium or Playwright: Debian's `chromium` plus aiohttp's websocket client (already a dependency)
install reliably on a closed network. Chromium is started offline-safe (no sync, no component updates,
no background networking, a fresh profile), on 127.0.0.1 with a port it picks, in its own process
group so that every helper process it forks is stopped with it.
"""

# A test helper: starting Chromium and reading its port file briefly block the test's own loop.
# ruff: noqa: ASYNC109, ASYNC220, ASYNC240
from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1440,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(AssertionError):
    pass


class Page:
    """One Chromium process and its first tab."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.profile = tempfile.mkdtemp(prefix="rpq-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.console_errors: list[str] = []
        self.blocked: list[str] = []  # URL fragments whose requests fail (see `block`)

    async def start(self) -> Page:
        self.proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BrowserError(f"chromium did not start (exit code {self.proc.poll()})")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            data = json.loads(message.data)
            fut = self._pending.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in data:
                    fut.set_exception(BrowserError(str(data["error"])))
                else:
                    fut.set_result(data.get("result", {}))
            elif data.get("method") == "Fetch.requestPaused":
                params = data["params"]
                failing = any(part in params["request"]["url"] for part in self.blocked)
                method = "Fetch.failRequest" if failing else "Fetch.continueRequest"
                extra = {"errorReason": "ConnectionRefused"} if failing else {}
                await self._ws.send_str(
                    json.dumps(
                        {
                            "id": next(self._ids),
                            "method": method,
                            "params": {"requestId": params["requestId"], **extra},
                        }
                    )
                )
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console_errors.append(json.dumps(data["params"]["exceptionDetails"])[:2000])

    async def send(self, method: str, **params: Any) -> Any:
        assert self._ws is not None
        call_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        return await asyncio.wait_for(fut, 30)

    async def eval(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 20) -> Any:
        """Poll `expression` until it is truthy; fail naming `what` (no timing is asserted)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.eval(expression)
            except BrowserError as exc:  # e.g. the page is still loading
                value = exc
            if value and not isinstance(value, BrowserError):
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"the page never showed {what} (last value {value!r})")
            await asyncio.sleep(0.05)

    async def block(self, fragment: str) -> None:
        """Fail every request whose URL contains `fragment`, as a network that drops it would."""
        self.blocked.append(fragment)
        await self.send("Fetch.enable", patterns=[{"urlPattern": "*"}])

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def screenshot(self, path: Path) -> None:
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.write_bytes(base64.b64decode(data["data"]))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)
