"""The code under test: small RunPod-calling "apps", one per client family, written as their own docs
show (RunPod's base URL hard-coded, the key from $RUNPOD_API_KEY). None knows about the emulator.

Each app offers the same five operations, so one scenario checks every family: run a job, poll it to
its end, stream a generator job, cancel a queued job, read a FAILED job's error.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import httpx
import requests

from runpod_queue.emulator import EndpointSpec

BASE = "https://api.runpod.ai/v2"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


def echo(job: dict[str, Any]) -> Any:
    return {"echo": job["input"]}


def tokens(job: dict[str, Any]) -> Any:
    yield from ["a", "b", "c"]


def fail(job: dict[str, Any]) -> Any:
    raise ValueError("input needs a 'prompt'")


# `parked` has no worker: its jobs stay IN_QUEUE until cancelled, so a cancel needs no timing.
ENDPOINTS = {"echo": echo, "tokens": tokens, "fail": fail, "parked": EndpointSpec(echo, workers=0)}


def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['RUNPOD_API_KEY']}"}


class RequestsApp:
    """RunPod's docs' `requests` example, grown to the five operations."""

    def run(self, endpoint: str, payload: dict[str, Any]) -> str:
        r = requests.post(f"{BASE}/{endpoint}/run", json={"input": payload}, headers=headers(), timeout=10)
        r.raise_for_status()
        return str(r.json()["id"])

    def status(self, endpoint: str, job_id: str) -> dict[str, Any]:
        r = requests.get(f"{BASE}/{endpoint}/status/{job_id}", headers=headers(), timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def wait(self, endpoint: str, job_id: str) -> dict[str, Any]:
        for _ in range(2000):
            job = self.status(endpoint, job_id)
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.005)
        raise AssertionError("job never ended")

    def stream(self, endpoint: str, job_id: str) -> list[Any]:
        chunks: list[Any] = []
        for _ in range(2000):
            r = requests.get(f"{BASE}/{endpoint}/stream/{job_id}", headers=headers(), timeout=30)
            body = r.json()
            chunks += [c["output"] for c in body["stream"]]
            if body["status"] in TERMINAL:
                return chunks
        raise AssertionError("stream never ended")

    def cancel(self, endpoint: str, job_id: str) -> str:
        r = requests.post(f"{BASE}/{endpoint}/cancel/{job_id}", headers=headers(), timeout=10)
        return str(r.json()["status"])


class HttpxAsyncApp:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def run(self, endpoint: str, payload: dict[str, Any]) -> str:
        r = await self.client.post(f"{BASE}/{endpoint}/run", json={"input": payload}, headers=headers())
        return str(r.raise_for_status().json()["id"])

    async def wait(self, endpoint: str, job_id: str) -> dict[str, Any]:
        for _ in range(2000):
            r = await self.client.get(f"{BASE}/{endpoint}/status/{job_id}", headers=headers())
            job = dict(r.raise_for_status().json())
            if job["status"] in TERMINAL:
                return job
            await asyncio.sleep(0.005)
        raise AssertionError("job never ended")

    async def stream(self, endpoint: str, job_id: str) -> list[Any]:
        chunks: list[Any] = []
        while True:
            body = (await self.client.get(f"{BASE}/{endpoint}/stream/{job_id}", headers=headers())).json()
            chunks += [c["output"] for c in body["stream"]]
            if body["status"] in TERMINAL:
                return chunks

    async def cancel(self, endpoint: str, job_id: str) -> str:
        r = await self.client.post(f"{BASE}/{endpoint}/cancel/{job_id}", headers=headers())
        return str(r.json()["status"])


class AiohttpApp:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def run(self, endpoint: str, payload: dict[str, Any]) -> str:
        async with self.session.post(
            f"{BASE}/{endpoint}/run", json={"input": payload}, headers=headers()
        ) as r:
            r.raise_for_status()
            return str((await r.json())["id"])

    async def wait(self, endpoint: str, job_id: str) -> dict[str, Any]:
        for _ in range(2000):
            async with self.session.get(f"{BASE}/{endpoint}/status/{job_id}", headers=headers()) as r:
                job = dict(await r.json())
            if job["status"] in TERMINAL:
                return job
            await asyncio.sleep(0.005)
        raise AssertionError("job never ended")

    async def stream(self, endpoint: str, job_id: str) -> list[Any]:
        chunks: list[Any] = []
        while True:
            async with self.session.get(f"{BASE}/{endpoint}/stream/{job_id}", headers=headers()) as r:
                body = await r.json()
            chunks += [c["output"] for c in body["stream"]]
            if body["status"] in TERMINAL:
                return chunks

    async def cancel(self, endpoint: str, job_id: str) -> str:
        async with self.session.post(f"{BASE}/{endpoint}/cancel/{job_id}", headers=headers()) as r:
            return str((await r.json())["status"])
