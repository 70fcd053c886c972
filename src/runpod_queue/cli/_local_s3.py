"""The S3 a local emulator serves (`rpq serve --s3`), asked for over its control plane.

`GET /_emulator/s3` answers the embedded S3 as RunPod's ``s3Config`` object. Its credentials are moto's
fixed local stand-ins (moto accepts any); the commands that use them still never print the secret,
except `rpq worker-env`, which prints exactly that known stand-in (``_storage.is_local_stand_in``).
"""

from __future__ import annotations

import os

import httpx

from runpod_queue._models import S3Config
from runpod_queue._transport import _tls_context
from runpod_queue.errors import ConfigurationError

__all__ = ["emulator_key", "emulator_s3"]

_TIMEOUT_S = 5.0


def emulator_key(api_key: str | None = None) -> str | None:
    """The key to show the emulator: ``api_key``, else $RPQ_EMULATOR_API_KEY (what `rpq serve --api-key`
    reads), else $RUNPOD_API_KEY (what the other `--local` commands send); None for a keyless one."""
    return api_key or os.environ.get("RPQ_EMULATOR_API_KEY") or os.environ.get("RUNPOD_API_KEY") or None


def emulator_s3(port: int, *, host: str = "127.0.0.1", api_key: str | None = None) -> S3Config | None:
    """The embedded S3 of the emulator at ``host:port``; None when it serves none (started without --s3).

    Raises:
        ConfigurationError: Nothing answers there, the key is refused, or the answer is not an emulator's.
    """
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/_emulator/s3"
    key = emulator_key(api_key)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        answer = httpx.get(url, headers=headers, timeout=_TIMEOUT_S, verify=_tls_context())
    except httpx.HTTPError as exc:
        raise ConfigurationError(
            f"no emulator answers at {shown}:{port} ({type(exc).__name__}): start `rpq serve --s3 "
            f"--port {port}`, or pass the port it listens on"
        ) from None
    if answer.status_code == 404:
        if "serves no S3" in answer.text:
            return None
        raise ConfigurationError(
            f"{shown}:{port} is not an emulator of this version (no /_emulator/s3): update runpod-queue there"
        )
    if answer.status_code in (401, 403):
        raise ConfigurationError(
            f"the emulator at {shown}:{port} refused the key: export RPQ_EMULATOR_API_KEY=<the key "
            "`rpq serve --api-key` was given>"
        )
    try:
        data = answer.json()
        return S3Config(data["accessId"], data["accessSecret"], data["bucketName"], data["endpointUrl"])
    except (ValueError, KeyError, TypeError):
        raise ConfigurationError(
            f"GET {url} answered {answer.status_code} without an s3Config: is an emulator listening there?"
        ) from None
