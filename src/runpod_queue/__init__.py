"""runpod-queue: client, emulator, batch runner and CLI for RunPod Serverless queue endpoints."""

from __future__ import annotations

from runpod_queue._contract import JobStatus

__all__ = ["JobStatus"]
__version__ = "0.1.0"
