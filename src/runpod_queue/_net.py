"""Listening sockets for the servers this package starts (emulator, webhook receiver in a batch)."""

from __future__ import annotations

import socket

__all__ = ["listen_socket"]


def listen_socket(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (port 0: a free one).

    Bound here rather than by uvicorn: uvicorn answers a bind failure with `sys.exit`, which would end a
    whole batch or test process instead of raising an error the caller can report.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
