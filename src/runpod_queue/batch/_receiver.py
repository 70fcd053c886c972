"""The webhook receiver of a webhook-driven batch: uvicorn serving ``webhooks.asgi_app`` on the runner's
own event loop, so a delivery and a status check never race across threads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runpod_queue._net import listen_socket

if TYPE_CHECKING:
    from runpod_queue.webhooks import WebhookReceiver

__all__ = ["ReceiverServer"]


class ReceiverServer:
    """Start, report the address it got (port 0 picks a free one), stop. Signals stay the caller's."""

    def __init__(self, receiver: WebhookReceiver, host: str, port: int) -> None:
        import uvicorn

        from runpod_queue._serving import guarded_config
        from runpod_queue.webhooks import asgi_app

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # Ctrl-C belongs to the batch (it stops submitting), not to the receiver

        # It may face the internet (`--listen`): slow or oversized requests and floods are bounded.
        config = guarded_config(
            asgi_app(receiver), host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = _Server(config)
        self._host, self._port = host, port
        self._task: asyncio.Task[None] | None = None
        self.address: tuple[str, int] | None = None  # (host, port) once listening

    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound (host, port). A taken address is an ``OSError`` naming it
        (bound here, not by uvicorn, whose answer to a bind failure is ``sys.exit``)."""
        sock = listen_socket(self._host, self._port)
        bound: Any = sock.getsockname()
        self.address = (self._host, int(bound[1]))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                raise OSError(f"webhook receiver on {self._host}:{self.address[1]} stopped while starting")
            await asyncio.sleep(0.01)
        return self.address

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
