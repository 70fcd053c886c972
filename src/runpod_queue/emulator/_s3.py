"""The emulator's embedded S3: moto's server mode on loopback, with the buckets RunPod workers write to.

moto (the ``s3`` extra) is imported only when an emulator is asked for S3: its server costs about 0.9 s
to import. The buckets: ``runpod-queue`` (the store's default, what ``emu.s3_config`` names) and the
bucket ``rp_upload.upload_image`` writes to when given none, named after the month (``%m-%y``), for this
month and the next (an emulator running over a month's end keeps working).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Final

from runpod_queue._models import S3Config
from runpod_queue._storage import LOCAL_KEY_ID, LOCAL_SECRET
from runpod_queue.errors import ConfigurationError

__all__ = ["LocalS3", "month_buckets"]

DEFAULT_BUCKET: Final = "runpod-queue"


def month_buckets(now: float | None = None) -> list[str]:
    """``rp_upload``'s default bucket names (``%m-%y``) for this month and the next."""
    now = time.time() if now is None else now
    this = time.localtime(now)
    following = time.localtime(now + 32 * 86400 - (this.tm_mday - 1) * 86400)
    return sorted({time.strftime("%m-%y", this), time.strftime("%m-%y", following)})


class LocalS3:
    """moto's S3 server in a background thread on 127.0.0.1, with the buckets created."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self.config: S3Config | None = None

    def start(self) -> S3Config:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise ConfigurationError("the embedded S3 needs moto: pip install 'runpod-queue[s3]'") from None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        server.start()
        self._server = server
        port = server.get_host_and_port()[1]
        self.config = config = S3Config(
            LOCAL_KEY_ID, LOCAL_SECRET, DEFAULT_BUCKET, f"http://{self.host}:{port}"
        )
        from runpod_queue._storage import S3Store

        # moto accepts any credentials; the fixed pair only has to look like one to the SDKs.
        client = S3Store(config).client
        for bucket in [DEFAULT_BUCKET, *month_buckets()]:
            client.create_bucket(Bucket=bucket)
        return config

    def environment(self) -> dict[str, str]:
        """What a RunPod worker reads: ``BUCKET_*`` (``rp_upload``), the bucket name, and the switch that
        lets ``rp_download`` (runpod >= 1.12) fetch from a loopback address."""
        config = self.config
        if config is None:
            raise RuntimeError("the embedded S3 is not running")
        return {
            "BUCKET_ENDPOINT_URL": config.endpoint_url,
            "BUCKET_ACCESS_KEY_ID": config.access_id,
            "BUCKET_SECRET_ACCESS_KEY": config.access_secret,
            "BUCKET_NAME": config.bucket_name,
            "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS": "1",
        }

    def export(self) -> None:
        """Set ``environment()`` in this process (in-process handlers and the worker processes it starts
        read them there, as on RunPod); ``stop`` puts the previous values back."""
        for name, value in self.environment().items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def stop(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
