"""The official `runpod` test server (`--rp_serve_api`) on bench/_noop_worker.py's handler, on a port it binds
itself (port 0) and prints as `http://127.0.0.1:<port>`.

The official server only takes a fixed `--rp_api_port`, and probing for a free port first races with
other processes on a shared machine. So `uvicorn.run`, as the official `WorkerAPI.start_uvicorn` calls it,
is given a socket bound here; the app, its uvicorn settings and the handler are the official ones.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import uvicorn
from runpod.serverless.modules import rp_fastapi

sys.argv = [sys.argv[0], "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_log_level", "ERROR"]


def run_on_bound_socket(app: Any, **settings: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings["port"] = port
    print(f"official test server at http://127.0.0.1:{port}", flush=True)
    uvicorn.Server(uvicorn.Config(app, **settings)).run(sockets=[sock])


rp_fastapi.uvicorn.run = run_on_bound_socket  # type: ignore[assignment]

if __name__ == "__main__":
    import runpod

    from _noop_worker import handler

    runpod.serverless.start({"handler": handler})
