"""Uploads in batch inputs: each ``Upload`` (or ``{"$upload": "path"}`` in a JSON line) goes to the client's
store and is replaced by its presigned URL just before the item is submitted — journaled, so a resume
never uploads a file twice.

For each upload of an item (numbered in input order, depth first), a row in the journal's ``uploads``
table records the object key *before* the upload starts and the URL once it is done:

* a resume finds the URL and reuses it, after a ``HEAD`` proves the object is still there (an emulator's
  in-memory S3 forgets everything when restarted: then the same key is uploaded again);
* a journaled URL with less than ``min(1 day, half the store's lifetime)`` left is presigned again for
  the same object (presigning is local: no transfer). A day because RunPod keeps a queued job 24 h by
  default: the worker may fetch the URL that late;
* an upload interrupted midway (its row has no URL) is sent again to the same key, so nothing is left
  under a second name;
* a path whose size or modification time changed since, or bytes whose SHA-256 changed, is uploaded
  again (same key); a file object cannot be checked and is taken as unchanged.

Object keys: the ``Upload``'s own ``key``, else ``batch/<journal id>/<item id>/<n>/<file name>``, where
the journal id is random per journal and the item id is a hash of the item's key: stable across resumes,
distinct between batches.

A missing or unreadable file, or a malformed marker, fails that item (INVALID, with the reason); a store
that refuses (no bucket, wrong credentials) or a transfer that fails stops the batch, resumable.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from runpod_queue._storage import AsyncS3Store, Source, Upload
from runpod_queue.batch._journal import Journal
from runpod_queue.errors import ConfigurationError, StorageError

__all__ = ["MARKER", "BadUpload", "BatchUploads", "find_uploads"]

MARKER: Final = "$upload"
_UPLOADS_AT_ONCE = 2  # files in transfer at once; each sends `store.concurrency` parts in parallel
_RENEW_BEFORE_S = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    item TEXT NOT NULL,             -- items.key
    n INTEGER NOT NULL,             -- the upload's position in the item's input (depth first, from 0)
    bucket TEXT NOT NULL,
    object_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,      -- what the source was: size:mtime of a path, sha256 of bytes
    url TEXT,                       -- NULL until the upload is complete
    expires_at REAL,                -- wall-clock seconds the URL stops working
    PRIMARY KEY (item, n)
);
"""


class BadUpload(ValueError):
    """An upload in an item that cannot be done (missing file, malformed marker): fails that item only."""


def _marker(value: dict[str, Any]) -> Upload:
    path = value[MARKER]
    extra = value.keys() - {MARKER, "key"}
    if extra:
        raise BadUpload(
            f'{{"$upload": ...}} takes only "$upload" (a file path) and "key"; this one also has '
            f"{', '.join(sorted(repr(k) for k in extra)):.120}"
        )
    if not isinstance(path, str) or not path:
        raise BadUpload(f'"$upload" takes a file path (a non-empty string), got {path!r:.80}')
    key = value.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        raise BadUpload(f'"key" next to "$upload" takes an object key (a string), got {key!r:.80}')
    return Upload(path, key=key)


def find_uploads(value: Any) -> list[Upload]:
    """Every ``Upload`` and ``{"$upload": ...}`` marker in ``value``, depth first.

    Raises:
        BadUpload: A malformed marker.
    """
    if isinstance(value, Upload):
        return [value]
    if isinstance(value, dict):
        if MARKER in value:
            return [_marker(value)]
        return [found for item in value.values() for found in find_uploads(item)]
    if isinstance(value, list | tuple):
        return [found for item in value for found in find_uploads(item)]
    return []


def _substitute(value: Any, urls: list[str], at: list[int]) -> Any:
    if isinstance(value, Upload) or (isinstance(value, dict) and MARKER in value):
        url = urls[at[0]]
        at[0] += 1
        return url
    if isinstance(value, dict):
        return {key: _substitute(item, urls, at) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(item, urls, at) for item in value]
    return value


def _fingerprint(source: Source) -> str:
    """What the source is now, to tell on resume whether the journaled upload still holds it.

    Raises:
        BadUpload: A path that is not a readable file.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return "sha256:" + hashlib.sha256(source).hexdigest()
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise BadUpload(f"upload source {str(path)!r} is not a file: fix the path (relative paths are "
                            "read from the directory the batch runs in)")  # fmt: skip
        try:
            with path.open("rb"):
                stat = path.stat()
        except OSError as exc:
            raise BadUpload(f"cannot read upload source {str(path)!r}: {exc.strerror}") from None
        return f"file:{stat.st_size}:{stat.st_mtime_ns}"
    if hasattr(source, "read"):
        return "stream"
    raise BadUpload(f"an Upload's source must be bytes, a path or a binary file, got {type(source).__name__}")


class BatchUploads:
    """Resolves the uploads of the items of one run, through ``store``, journaled in ``journal``."""

    def __init__(
        self, journal: Journal, store: AsyncS3Store | None, *, now: Callable[[], float] = time.time
    ) -> None:
        self.journal = journal
        self.store = store
        self._now = now
        self._db = journal._db  # the journal's own connection: one file, one writer (the event loop)
        self._db.executescript(_SCHEMA)
        self._gate = asyncio.Semaphore(_UPLOADS_AT_ONCE)
        self.uploaded = 0  # transfers done in this run (a resume that reuses everything does none)
        self.reused = 0
        self.presigned = 0

    def _prefix(self) -> str:
        prefix = self.journal.meta("upload_prefix")
        if prefix is None:
            prefix = secrets.token_hex(6)
            self.journal.set_meta("upload_prefix", prefix)
        return prefix

    def _object_key(self, item: str, n: int, upload: Upload) -> str:
        if upload.key:
            return upload.key
        source = upload.source
        if isinstance(source, str | os.PathLike):
            name = Path(source).name
        else:
            raw = getattr(source, "name", None)
            name = Path(raw).name if isinstance(raw, str) and raw else "upload.bin"
        digest = hashlib.sha256(item.encode()).hexdigest()[:16]
        return f"batch/{self._prefix()}/{digest}/{n}/{name}"

    async def resolve(self, item: str, line: int, payload: Any) -> Any:
        """``payload`` with every upload replaced by its URL (the payload itself when it holds none).

        Raises:
            BadUpload: The item cannot be sent as it is (fail it, not the batch).
            ConfigurationError: There is no store, or it refuses us (stop the batch).
            StorageError: A transfer failed (stop the batch; a resume goes on).
        """
        found = find_uploads(payload)
        if not found:
            return payload
        store = self.store
        if store is None:
            raise ConfigurationError(
                f"line {line} holds an upload but there is no store: make the client with "
                "store=S3Store(S3Config.from_env()) (rpq batch: --upload-from-env, or --local with an "
                "emulator started by `rpq serve --s3`)"
            )
        prints = [_fingerprint(upload.source) for upload in found]  # a bad file fails before any transfer
        urls = []
        for n, (upload, fingerprint) in enumerate(zip(found, prints, strict=True)):
            urls.append(await self._one(store, item, n, upload, fingerprint))
        return _substitute(payload, urls, [0])

    async def _one(self, store: AsyncS3Store, item: str, n: int, upload: Upload, fingerprint: str) -> str:
        bucket = store.config.bucket_name
        row = self._db.execute(
            "SELECT bucket, object_key, fingerprint, url, expires_at FROM uploads WHERE item = ? AND n = ?",
            (item, n),
        ).fetchone()
        if row is not None and row[0] == bucket and row[2] == fingerprint and row[3] is not None:
            object_key, url, expires_at = str(row[1]), str(row[3]), float(row[4])
            if await self._exists(store, object_key):
                self.reused += 1
                lifetime = store.sync.expires_in
                if expires_at - self._now() >= min(_RENEW_BEFORE_S, lifetime / 2):
                    return url
                url = await store.url(object_key)
                self.presigned += 1
                self._done(item, n, url, self._now() + lifetime)
                return url
        same_bucket = row is not None and row[0] == bucket
        object_key = str(row[1]) if same_bucket else self._object_key(item, n, upload)
        self._db.execute(  # the key before the transfer: an interrupted one is redone under the same name
            "INSERT OR REPLACE INTO uploads (item, n, bucket, object_key, fingerprint) "
            "VALUES (?, ?, ?, ?, ?)",
            (item, n, bucket, object_key, fingerprint),
        )
        async with self._gate:
            return await self._transfer(store, item, n, upload.source, object_key)

    async def _transfer(self, store: AsyncS3Store, item: str, n: int, source: Source, object_key: str) -> str:
        """Upload, then journal the URL — also when a stop cancels us after the last byte went: a transfer
        cut short is aborted (nothing left under the key); one that completed is never done again."""
        sync = store.sync
        cancel = threading.Event()
        started = self._now()
        transfer = asyncio.ensure_future(
            asyncio.to_thread(sync._put, source, key=object_key, progress=None, cancel=cancel)
        )
        try:
            await asyncio.shield(transfer)
        except asyncio.CancelledError:
            cancel.set()  # the thread stops at its next part and aborts the multipart upload
            try:
                await transfer
            except BaseException:
                raise asyncio.CancelledError from None
            self._done(item, n, sync.url(object_key), started + sync.expires_in)  # presigning is local
            raise
        except FileNotFoundError as exc:  # removed between the check and the transfer
            raise BadUpload(str(exc)) from None
        url = await store.url(object_key)
        self.uploaded += 1
        self._done(item, n, url, started + sync.expires_in)
        return url

    def _done(self, item: str, n: int, url: str, expires_at: float) -> None:
        self._db.execute(
            "UPDATE uploads SET url = ?, expires_at = ? WHERE item = ? AND n = ?", (url, expires_at, item, n)
        )

    @staticmethod
    async def _exists(store: AsyncS3Store, object_key: str) -> bool:
        try:
            await asyncio.to_thread(
                store.sync._call, "head_object", Bucket=store.config.bucket_name, Key=object_key
            )
        except StorageError:  # no such object (or it cannot be seen): upload it again
            return False
        return True
