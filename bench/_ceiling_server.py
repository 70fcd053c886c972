"""The ceiling of any Python server here: a raw ASGI app answering a constant JSON to every request, on the
emulator's own stack (uvicorn + uvloop + httptools, no access log, no proxy headers), one process. It reads
the request body (as a runsync route must) and answers a body the size of a finished runsync job's.

Binds port 0 itself and prints `http://127.0.0.1:<port>` (see _harness.py).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
import uvloop

BODY = b'{"delayTime":0,"executionTime":0,"id":"sync-00000000-0000-0000-0000-000000000000-u1","output":1,"status":"COMPLETED"}'  # noqa: E501
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
START = {"type": "http.response.start", "status": 200, "headers": HEADERS}
ANSWER = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # the whole request body, as any route that parses one must
        message = await receive()
        more = message.get("more_body", False)
    await send(START)
    await send(ANSWER)


def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"ceiling server at http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        proxy_headers=False,
        log_level="error",
    )
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
