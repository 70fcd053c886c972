"""Object storage for payloads over RunPod's request limits: upload an input, hand the worker a URL, fetch
the URLs a worker returns.

Built on boto3/botocore (the ``s3`` extra), imported on first use: ``import runpod_queue`` stays fast.
boto3 was chosen by measurement (``bench/s3.py``) and because the official worker's ``rp_upload`` uses it,
so the same client, addressing style and signatures serve both sides. The transfers are our own loop over
botocore's calls rather than boto3's ``upload_file``: a bounded number of parts in memory (peak RSS
stays flat whatever the size), every part's MD5 checked by the server (``Content-MD5``), the multipart
upload aborted on any failure or interruption, and a progress callback per part.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import re
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Union
from urllib.parse import unquote, urlsplit

import httpx

from runpod_queue._models import S3Config
from runpod_queue._transport import _tls_context
from runpod_queue._units import Duration, seconds
from runpod_queue.errors import ConfigurationError, StorageError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from botocore.client import BaseClient

__all__ = [
    "LOCAL_KEY_ID",
    "LOCAL_SECRET",
    "AsyncS3Store",
    "Progress",
    "S3Store",
    "Upload",
    "async_store",
    "is_local_stand_in",
    "redact_url",
    "resolve_uploads",
    "resolve_uploads_async",
    "sync_store",
]

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes]]
Progress = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_done, bytes_total)`` after each part; ``bytes_total`` is None when unknown."""

_MIB = 1 << 20
_HELD_PARTS = 4  # parts of a stream (read in order, held until sent) in memory at once, at most
# The emulator's embedded S3 (moto, which accepts any key pair) uses this fixed pair: a stand-in known to
# everyone, never a credential, so `rpq worker-env` may print it (`is_local_stand_in`).
LOCAL_KEY_ID = "emulator-access-key"
LOCAL_SECRET = "emulator-secret-key"  # noqa: S105 - a local stand-in's fixed value, not a credential
_DEFAULT_EXPIRY = 7 * 24 * 3600  # rp_upload's presigned URLs last 7 days; SigV4 allows no more
_SIGNED = re.compile(r"(?i)([?&]X-Amz-(?:Signature|Credential|Security-Token)=)[^&]*")
_SIMPLE_ETAG = re.compile(r"^[0-9a-f]{32}$")


def is_local_stand_in(config: S3Config) -> bool:
    """Is ``config``'s key pair the embedded S3's fixed stand-in (safe to print), not a real one?"""
    return config.access_id == LOCAL_KEY_ID and config.access_secret == LOCAL_SECRET


def redact_url(url: str) -> str:
    """The URL with its ``X-Amz-Signature``, ``X-Amz-Credential`` and ``X-Amz-Security-Token`` values
    replaced by ``REDACTED``: what we print or log of a presigned URL.

    Args:
        url: Any URL.

    Returns:
        The same URL, safe to show.
    """
    return _SIGNED.sub(r"\1REDACTED", url)


class Upload:
    """A file or bytes to put in object storage and send as its URL: place it anywhere in a job's input.

    The client uploads it through its store (``Client(store=...)`` or ``run(..., store=...)``) and sends the
    presigned URL in its place, so a 15 MB image passes ``/run``'s 10 MB limit.

    Args:
        source: Bytes, a path, or a binary file object.
        key: The object key; default ``inputs/<uuid>/<file name>``.
    """

    __slots__ = ("key", "source")

    def __init__(self, source: Source, key: str | None = None) -> None:
        self.source: Source = source
        self.key: str | None = key

    def __repr__(self) -> str:
        shown = (
            f"<{len(self.source)} bytes>"
            if isinstance(self.source, (bytes, bytearray, memoryview))
            else self.source
        )
        return f"Upload({shown!r}, key={self.key!r})"


def _source_name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    name = getattr(source, "name", None)
    return Path(name).name if isinstance(name, str) and name else "upload.bin"


def _open_source(source: Source) -> tuple[IO[bytes], int | None, bool]:
    """(readable, total size if known, whether we opened it and must close it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = memoryview(source).nbytes
        return io.BytesIO(), size, True  # never read: bytes are sent as windows of the caller's buffer
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"upload source {str(path)!r} is not a file: pass an existing file's path"
            )
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise StorageError(f"cannot read upload source {str(path)!r}: {exc.strerror}") from None
        return handle, path.stat().st_size, True
    if hasattr(source, "read"):
        return source, None, False
    raise TypeError(
        f"upload source must be bytes, a path or a binary file object, got {type(source).__name__}"
    )


def _read_full(handle: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes: a pipe or socket may hand out less per read than asked."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = handle.read(left)
        if not chunk:
            break
        if not isinstance(chunk, bytes):
            raise TypeError(
                f"upload source must be opened in binary mode (read() gave {type(chunk).__name__})"
            )
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _md5(data: bytes) -> tuple[bytes, str]:
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return digest, base64.b64encode(digest).decode()


def _part(number: int, etag: str, crc: str | None) -> dict[str, Any]:
    """One part of a CompleteMultipartUpload: with its CRC32 when one was declared (S3 checks them)."""
    part: dict[str, Any] = {"PartNumber": number, "ETag": etag}
    if crc:
        part["ChecksumCRC32"] = crc
    return part


def _md5_of(body: bytes | _Window) -> tuple[bytes, str]:
    """A part's MD5 (raw, base64), computed by the thread that sends it; a window is read for it and
    rewound (a second read of the same pages, from the OS's cache)."""
    if isinstance(body, bytes):
        return _md5(body)
    md5 = hashlib.md5(usedforsecurity=False)
    for chunk in iter(lambda: body.read(_MIB), b""):
        md5.update(chunk)
    body.seek(0)
    digest = md5.digest()
    return digest, base64.b64encode(digest).decode()


ReadAt = Callable[[int, int], bytes]


class _Window:
    """Bytes ``[offset, offset + length)`` of a source readable at any offset (a file, through ``pread``;
    bytes in memory): the body of one part, read as botocore hashes and sends it, so no part is ever held
    in memory whole and any number can be in flight. Seekable, so botocore can rewind it for a resend."""

    __slots__ = ("_length", "_offset", "_pos", "_read_at")

    def __init__(self, read_at: ReadAt, offset: int, length: int) -> None:
        self._read_at = read_at
        self._offset = offset
        self._length = length
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._pos
        if size is None or size < 0 or size > left:
            size = left
        if size <= 0:
            return b""
        data = self._read_at(self._offset + self._pos, size)
        if len(data) != size:
            # pread on a regular file returns less only at its end: the file got shorter meanwhile
            raise StorageError("the upload source got shorter during the upload: upload a file at rest")
        self._pos += size
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos


def _random_access(source: Source, handle: IO[bytes]) -> tuple[ReadAt, int, int] | None:
    """(read_at, size, start) when ``source`` can be read at any offset: bytes, or a regular file
    (``pread`` on its descriptor, from its current position); None for a pipe, socket or other stream."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        return (lambda offset, n: bytes(view[offset : offset + n])), len(view), 0
    pread = getattr(os, "pread", None)
    if pread is None:  # pragma: no cover - Windows: read in order instead
        return None
    try:
        fd = handle.fileno()
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        start = handle.tell()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both OSError and ValueError
        return None
    return (lambda offset, n: pread(fd, n, start + offset)), max(0, info.st_size - start), start


def _chunks(handle: IO[bytes], first: bytes, size: int) -> Iterator[bytes]:
    """``first``, then ``size``-byte chunks of ``handle`` until it ends: a stream's parts, in order."""
    chunk = first
    while chunk:
        yield chunk
        chunk = _read_full(handle, size)


# Every store's client comes from one boto3 Session per process (one per value of the AWS_* variables
# that choose the files a session reads): a fresh Session parses botocore's S3 model and endpoint rules
# again, ~130 ms CPU per client, while one that has them cached builds a client in ~5 ms. Each client still
# has its own event hooks, config, connection pool and credentials (ours are always explicit, so the
# session's credential chain is never asked).
_SESSION_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                "AWS_DATA_PATH")  # fmt: skip
_sessions: dict[tuple[str | None, ...], Any] = {}
_sessions_lock = threading.Lock()  # a Session is not safe to create clients from in two threads at once


def _new_lock_after_fork() -> None:
    """A child forked while another thread built a client would otherwise find the lock held forever."""
    global _sessions_lock
    _sessions_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def _new_client(boto3: Any, **kwargs: Any) -> BaseClient:
    key = tuple(os.environ.get(name) for name in _SESSION_ENV)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = boto3.session.Session()
        return session.client("s3", **kwargs)


class S3Store:
    """Uploads to and downloads from an S3-compatible bucket, streaming; presigns the URLs workers read.

    Args:
        config: Where and with which credentials (``S3Config.from_env()`` reads the ``BUCKET_*`` variables).
        part_size: Bytes per multipart part, and the size above which uploads go multipart (at least 5 MiB,
            S3's smallest part).
        concurrency: Parts in flight at once; memory holds at most this many parts (4 x 8 MiB).
        expires_in: Default lifetime of presigned URLs: 7 days, as ``rp_upload``, the most SigV4 allows.
        region: The signing region; S3-compatible services mostly ignore it.
        checksum: ``"CRC32"``: declare S3's own flexible checksum on every upload (each part's CRC32 is
            checked by S3 and the object keeps a composite CRC32, as boto3's ``upload_file`` does; no MD5
            is computed). ``None`` (default): ``Content-MD5`` over HTTPS, the signed SHA-256 over HTTP,
            which every S3-compatible service accepts; some refuse flexible checksums.

    Example:
        ``url = S3Store(S3Config.from_env()).upload("big.png")`` then ``ep.run({"image": url})``.
    """

    def __init__(
        self,
        config: S3Config,
        *,
        part_size: int = 8388608,
        concurrency: int = 10,
        expires_in: Duration = 604800,
        region: str = "us-east-1",
        checksum: Literal["CRC32"] | None = None,
    ) -> None:
        if not isinstance(config, S3Config):
            raise TypeError(f"config must be an S3Config, got {type(config).__name__}")
        if part_size < 5 * _MIB:
            raise ValueError(f"part_size must be at least 5 MiB (S3's smallest part), got {part_size}")
        self.config = config
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.part_size = part_size
        self.concurrency = concurrency
        self.expires_in: int = _expiry(expires_in)
        self.region = region
        if checksum not in (None, "CRC32"):
            raise ValueError(f'checksum must be "CRC32" or None, got {checksum!r}')
        self.checksum: Literal["CRC32"] | None = checksum
        self._client: BaseClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store(endpoint_url={self.config.endpoint_url!r}, bucket={self.config.bucket_name!r})"

    @property
    def client(self) -> BaseClient:
        """The botocore S3 client (path-style addressing, as ``rp_upload`` uses for a custom endpoint)."""
        with self._lock:
            if self._client is None:
                try:
                    import boto3
                    from botocore.config import Config
                except ImportError:
                    raise ConfigurationError(
                        "object storage needs boto3: pip install 'runpod-queue[s3]'"
                    ) from None
                self._client = _new_client(
                    boto3,
                    endpoint_url=self.config.endpoint_url,
                    aws_access_key_id=self.config.access_id,
                    aws_secret_access_key=self.config.access_secret,
                    region_name=self.region,
                    config=Config(
                        signature_version="s3v4",
                        s3={"addressing_style": "path"},
                        retries={"max_attempts": 3, "mode": "standard"},
                        # a connection for every part in flight, kept open between parts
                        max_pool_connections=max(10, self.concurrency),
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                    ),
                )
            return self._client

    def url(self, key: str, *, expires_in: Duration | None = None, bucket: str | None = None) -> str:
        """A presigned GET URL for ``key``: anyone holding it can read the object until it expires.

        Args:
            key: The object key.
            expires_in: Lifetime; default the store's (7 days).
            bucket: Another bucket than the config's.

        Returns:
            The URL.
        """
        seconds = self.expires_in if expires_in is None else _expiry(expires_in)
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket or self.config.bucket_name, "Key": key}, ExpiresIn=seconds
        )
        return url

    def upload(
        self,
        source: Source,
        *,
        key: str | None = None,
        expires_in: Duration | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Put ``source`` in the bucket, streamed, and return a presigned GET URL for it.

        Above ``part_size`` the upload is multipart, at most ``concurrency`` parts in memory; if anything
        fails or the upload is interrupted (KeyboardInterrupt, task cancelled), the multipart upload is
        aborted: no partial object is left. Every part's MD5 is sent as ``Content-MD5``, so the server
        refuses a corrupted part, and the final ETag is compared with the one the parts imply.

        Args:
            source: Bytes, a path, or a binary file object (read from its current position).
            key: The object key; default ``inputs/<uuid>/<file name>``.
            expires_in: The URL's lifetime; default the store's (7 days).
            progress: Called as ``progress(bytes_done, bytes_total)`` after each part.

        Returns:
            The presigned URL (print it with ``redact_url``: its signature is a credential).

        Raises:
            FileNotFoundError: ``source`` is a path that is not a file.
            ConfigurationError: The bucket does not exist or the credentials are refused.
            StorageError: The transfer failed.
        """
        lifetime = self.expires_in if expires_in is None else _expiry(expires_in)  # refused before uploading
        done_key = self._put(source, key=key, progress=progress, cancel=None)
        return self.url(done_key, expires_in=lifetime)

    def _put(
        self, source: Source, *, key: str | None, progress: Progress | None, cancel: threading.Event | None
    ) -> str:
        key = key or f"inputs/{uuid.uuid4().hex}/{_source_name(source)}"
        handle, total, owned = _open_source(source)
        try:
            direct = _random_access(source, handle)
            if direct is not None:
                read_at, size, start = direct
                if size < self.part_size:
                    self._put_small(read_at(0, size), key, progress)
                else:
                    parts = (_Window(read_at, offset, min(self.part_size, size - offset))
                             for offset in range(0, size, self.part_size))  # fmt: skip
                    self._multipart(parts, key, size, progress, cancel, self.concurrency)
                if not owned:
                    handle.seek(start + size)  # the object's bytes are read, as a read() would leave it
            else:
                first = _read_full(handle, self.part_size)
                if len(first) < self.part_size:
                    self._put_small(first, key, progress)
                else:
                    self._multipart(
                        _chunks(handle, first, self.part_size), key, total, progress, cancel,
                        min(self.concurrency, _HELD_PARTS),
                    )  # fmt: skip
        finally:
            if owned:
                handle.close()
        return key

    @property
    def _checks_md5(self) -> bool:
        """Send ``Content-MD5``? Over plain HTTP botocore signs each body's SHA-256, which S3 verifies: the
        MD5 would check again what is already checked. Over HTTPS the payload is not signed, and with a
        ``Content-MD5`` botocore does not hash it either (TLS plus the MD5 suffice): the MD5 is the check."""
        return self.checksum is None and self.config.endpoint_url.lower().startswith("https://")

    def _put_small(self, data: bytes, key: str, progress: Progress | None) -> None:
        extra = {"ContentMD5": _md5(data)[1]} if self._checks_md5 else {}
        if self.checksum is not None:
            extra["ChecksumAlgorithm"] = self.checksum
        self._call("put_object", Bucket=self.config.bucket_name, Key=key, Body=data, **extra)
        if progress is not None:
            progress(len(data), len(data))

    def _multipart(
        self,
        parts: Iterator[bytes | _Window],
        key: str,
        total: int | None,
        progress: Progress | None,
        cancel: threading.Event | None,
        in_flight_max: int,
    ) -> None:
        """Send ``parts`` with at most ``in_flight_max`` in flight. A ``_Window`` is read by the thread
        that sends it (nothing held here); a ``bytes`` part is held until sent."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait  # only big uploads need it

        bucket = self.config.bucket_name
        declared = {"ChecksumAlgorithm": self.checksum} if self.checksum is not None else {}
        started = self._call("create_multipart_upload", Bucket=bucket, Key=key, **declared)
        upload_id = started["UploadId"]
        etags: dict[int, str] = {}
        crcs: dict[int, str] = {}
        digests: dict[int, bytes] = {}
        checks_md5 = self._checks_md5
        done = 0
        in_flight: dict[Future[tuple[int, str, int]], int] = {}

        def send(number: int, body: bytes | _Window) -> tuple[int, str, int]:
            extra: dict[str, str] = dict(declared)  # botocore computes the part's CRC32 and sends it
            if checks_md5:
                digest, extra["ContentMD5"] = _md5_of(body)
                digests[number] = digest
            answer = self._call(
                "upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                **extra,
            )  # fmt: skip
            if declared:
                crcs[number] = str(answer.get("ChecksumCRC32", ""))
            return number, str(answer["ETag"]), len(body)

        def settle(wanted: int) -> None:
            # Wait until at most `wanted` parts are in flight.
            nonlocal done
            while len(in_flight) > wanted:
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    del in_flight[future]
                    number, etag, size = future.result()
                    etags[number] = etag
                    done += size
                    if progress is not None:
                        progress(done, total)

        pool = ThreadPoolExecutor(max_workers=in_flight_max, thread_name_prefix="rpq-s3")
        number = 0
        try:
            for part in parts:
                if cancel is not None and cancel.is_set():
                    raise _cancelled()
                number += 1
                settle(in_flight_max - 1)
                in_flight[pool.submit(send, number, part)] = number
                del part  # a held part is referenced by its task only: freed once sent
            settle(0)
            answer = self._call(
                "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": [_part(n, etags[n], crcs.get(n)) for n in sorted(etags)]},
            )  # fmt: skip
        except BaseException:
            for future in in_flight:
                future.cancel()
            pool.shutdown(wait=True)
            with contextlib.suppress(Exception):  # the first failure is the one to report
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        pool.shutdown(wait=True)
        if not checks_md5:
            return
        joined = b"".join(digests[n] for n in sorted(digests))
        expected = f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{number}"
        etag = str(answer.get("ETag", "")).strip('"')
        if etag and "-" in etag and etag != expected:
            self.client.delete_object(Bucket=bucket, Key=key)
            raise StorageError(
                f"upload of {key!r} arrived corrupted (ETag {etag}, expected {expected}); retry it"
            )

    def download(
        self, url_or_key: str, *, to: str | os.PathLike[str] | None = None, progress: Progress | None = None
    ) -> bytes | Path:
        """Fetch an object, streamed: a presigned URL (read without credentials, from any host), a URL
        under the store's endpoint such as ``rp_upload.bucket_upload``'s unsigned
        ``{endpointUrl}/{bucketName}/{key}`` (read with the store's credentials), or a key in the bucket.

        Args:
            url_or_key: What to fetch.
            to: A file path to write to (written whole or not at all); without it the bytes are returned.
            progress: Called as ``progress(bytes_done, bytes_total)`` as chunks arrive.

        Returns:
            The bytes, or the path written.

        Raises:
            ValueError: A URL that is neither presigned nor under the store's endpoint.
            StorageError: The object does not exist, or the transfer failed or arrived corrupted.
            ConfigurationError: The bucket does not exist or the credentials are refused.
        """
        return self._get(url_or_key, to=to, progress=progress, cancel=None)

    def _locate(self, url_or_key: str) -> tuple[str, str] | None:
        """(bucket, key) for a key or a URL under our endpoint; None for a presigned URL to GET as is."""
        if not url_or_key.startswith(("http://", "https://")):
            if not url_or_key:
                raise ValueError("download needs a URL or a key, got ''")
            return self.config.bucket_name, url_or_key
        if _SIGNED.search(url_or_key):
            return None
        base = self.config.endpoint_url.rstrip("/") + "/"
        if not url_or_key.startswith(base):
            raise ValueError(
                f"{redact_url(url_or_key)!r} is neither presigned nor under this store's endpoint {base!r}: "
                "pass a presigned URL, a key, or use a store configured for that storage"
            )
        path = urlsplit(url_or_key).path[len(urlsplit(base).path) :]
        bucket, _, key = path.partition("/")
        if not bucket or not key:
            raise ValueError(f"{redact_url(url_or_key)!r} names no object: expected {base}<bucket>/<key>")
        return unquote(bucket), unquote(key)

    def _get(
        self,
        url_or_key: str,
        *,
        to: str | os.PathLike[str] | None,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> bytes | Path:
        located = self._locate(url_or_key)
        target = Path(to) if to is not None else None
        partial = (
            target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part") if target is not None else None
        )
        sink: IO[bytes] = partial.open("wb") if partial is not None else io.BytesIO()
        md5 = hashlib.md5(usedforsecurity=False)
        received = 0
        try:
            if located is None:
                total, etag = self._get_presigned(url_or_key, sink, md5, progress, cancel)
            else:
                total, etag = self._get_object(*located, sink, md5, progress, cancel)
            received = sink.tell()
            if total is not None and received != total:
                raise StorageError(f"download stopped after {received} of {total} bytes; retry it")
            if etag and _SIMPLE_ETAG.match(etag) and md5.hexdigest() != etag:
                raise StorageError(
                    f"download arrived corrupted (MD5 {md5.hexdigest()}, ETag {etag}); retry it"
                )
        except BaseException:
            sink.close()
            if partial is not None:
                partial.unlink(missing_ok=True)
            raise
        if partial is None:
            assert isinstance(sink, io.BytesIO)
            return sink.getvalue()
        sink.close()
        assert target is not None
        os.replace(partial, target)
        return target

    def _get_object(
        self,
        bucket: str,
        key: str,
        sink: IO[bytes],
        md5: Any,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> tuple[int | None, str]:
        answer = self._call("get_object", Bucket=bucket, Key=key)
        total = answer.get("ContentLength")
        body = answer["Body"]
        done = 0
        try:
            for chunk in body.iter_chunks(_MIB):
                if cancel is not None and cancel.is_set():
                    raise _cancelled()
                sink.write(chunk)
                md5.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        finally:
            body.close()
        return total, str(answer.get("ETag", "")).strip('"')

    def _get_presigned(
        self, url: str, sink: IO[bytes], md5: Any, progress: Progress | None, cancel: threading.Event | None
    ) -> tuple[int | None, str]:
        shown = redact_url(url)
        try:
            # the process's TLS context: httpx would load every CA certificate again (~30 ms CPU a GET)
            with httpx.stream("GET", url, timeout=httpx.Timeout(60.0), verify=_tls_context()) as answer:
                if answer.status_code != 200:
                    raise StorageError(
                        f"GET {shown} answered {answer.status_code}: the URL expired or is wrong"
                    )
                length = answer.headers.get("content-length")
                total = int(length) if length is not None else None
                done = 0
                for chunk in answer.iter_bytes(_MIB):
                    if cancel is not None and cancel.is_set():
                        raise _cancelled()
                    sink.write(chunk)
                    md5.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                return total, answer.headers.get("etag", "").strip('"')
        except httpx.HTTPError as exc:
            raise StorageError(f"GET {shown} failed: {type(exc).__name__}") from None

    def _call(self, operation: str, **params: Any) -> Any:
        """One botocore call, its failures turned into our errors (messages name the bucket and key, never
        a credential)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            where = f"{params.get('Bucket')}/{params.get('Key', '')}"
            endpoint = self.config.endpoint_url
            if code == "NoSuchBucket":
                raise ConfigurationError(
                    f"bucket {params.get('Bucket')!r} does not exist at {endpoint}: "
                    "create it or fix bucket_name"
                ) from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "401"):
                raise ConfigurationError(
                    f"{endpoint} refused the credentials for {where} ({code}): "
                    "check the access key id and secret"
                ) from None
            if code in ("NoSuchKey", "404"):
                raise StorageError(f"no object {where} at {endpoint}") from None
            raise StorageError(f"{operation} {where} failed at {endpoint}: {code or 'error'}") from None
        except BotoCoreError as exc:
            raise StorageError(
                f"{operation} failed at {self.config.endpoint_url}: {type(exc).__name__}"
            ) from None


def _expiry(value: Duration) -> int:
    # SigV4 presigned URLs live at most 7 days
    return int(seconds(value, "expires_in", low=1, high=_DEFAULT_EXPIRY))


def _cancelled() -> BaseException:
    """The ``asyncio.CancelledError`` a transfer raises in its thread when ``AsyncS3Store`` cancels it.

    asyncio is imported here and in the async methods, not at the top: ``import runpod_queue`` loads this
    module, and a process using only the sync client (every ``rpq run``) would pay ~70 ms CPU for it. Only
    an ``AsyncS3Store`` sets the cancel event, so asyncio is loaded by then anyway."""
    import asyncio

    return asyncio.CancelledError()


class AsyncS3Store:
    """``S3Store`` for asyncio: each transfer runs in a worker thread, so the event loop never blocks.

    Cancelling the awaiting task stops the transfer at the next part or chunk, and an upload cancelled
    midway is aborted (no partial object), as with ``S3Store``.

    Args:
        config: Where and with which credentials.
        part_size: Bytes per multipart part (at least 5 MiB).
        concurrency: Parts in flight at once.
        expires_in: Default lifetime of presigned URLs (7 days).
        region: The signing region.
        checksum: ``"CRC32"`` to declare S3's flexible checksum on uploads; see ``S3Store``.
    """

    def __init__(
        self,
        config: S3Config,
        *,
        part_size: int = 8388608,
        concurrency: int = 10,
        expires_in: Duration = 604800,
        region: str = "us-east-1",
        checksum: Literal["CRC32"] | None = None,
    ) -> None:
        self.sync: S3Store = S3Store(
            config, part_size=part_size, concurrency=concurrency, expires_in=expires_in, region=region,
            checksum=checksum,
        )  # fmt: skip
        self.config = config

    def __repr__(self) -> str:
        return f"AsyncS3Store(endpoint_url={self.config.endpoint_url!r}, bucket={self.config.bucket_name!r})"

    async def _in_thread(self, work: Callable[[threading.Event], Any]) -> Any:
        import asyncio  # loaded by the running event loop; see _cancelled

        cancel = threading.Event()
        future = asyncio.ensure_future(asyncio.to_thread(work, cancel))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()  # the thread stops at its next part and aborts; wait for that before going on
            with contextlib.suppress(BaseException):  # the cancellation is what the caller sees
                await future
            raise

    async def upload(
        self,
        source: Source,
        *,
        key: str | None = None,
        expires_in: Duration | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Put ``source`` in the bucket and return a presigned GET URL; see ``S3Store.upload``.

        Args:
            source: Bytes, a path, or a binary file object.
            key: The object key; default ``inputs/<uuid>/<file name>``.
            expires_in: The URL's lifetime; default the store's (7 days).
            progress: Called (from the worker thread) as ``progress(bytes_done, bytes_total)``.

        Returns:
            The presigned URL.
        """
        store = self.sync
        lifetime = store.expires_in if expires_in is None else _expiry(expires_in)  # refused before uploading
        done_key: str = await self._in_thread(
            lambda cancel: store._put(source, key=key, progress=progress, cancel=cancel)
        )
        import asyncio  # loaded by the running event loop; see _cancelled

        return await asyncio.to_thread(store.url, done_key, expires_in=lifetime)

    async def download(
        self, url_or_key: str, *, to: str | os.PathLike[str] | None = None, progress: Progress | None = None
    ) -> bytes | Path:
        """Fetch an object; see ``S3Store.download``.

        Args:
            url_or_key: A presigned URL, a URL under the store's endpoint, or a key.
            to: A file path to write to; without it the bytes are returned.
            progress: Called (from the worker thread) as ``progress(bytes_done, bytes_total)``.

        Returns:
            The bytes, or the path written.
        """
        store = self.sync
        result: bytes | Path = await self._in_thread(
            lambda cancel: store._get(url_or_key, to=to, progress=progress, cancel=cancel)
        )
        return result

    async def url(self, key: str, *, expires_in: Duration | None = None, bucket: str | None = None) -> str:
        """A presigned GET URL for ``key``; see ``S3Store.url``.

        Args:
            key: The object key.
            expires_in: Lifetime; default the store's (7 days).
            bucket: Another bucket than the config's.

        Returns:
            The URL.
        """
        import asyncio  # loaded by the running event loop; see _cancelled

        return await asyncio.to_thread(self.sync.url, key, expires_in=expires_in, bucket=bucket)


def sync_store(store: object) -> S3Store | None:
    """The ``store=`` a sync client was given, as an ``S3Store`` (an ``AsyncS3Store``'s own sync half)."""
    if store is None or isinstance(store, S3Store):
        return store
    if isinstance(store, AsyncS3Store):
        return store.sync
    raise TypeError(f"store must be an S3Store or AsyncS3Store, got {type(store).__name__}")


def async_store(store: object) -> AsyncS3Store | None:
    """The ``store=`` an async client was given, as an ``AsyncS3Store`` (an ``S3Store`` is wrapped)."""
    if store is None or isinstance(store, AsyncS3Store):
        return store
    if isinstance(store, S3Store):
        wrapped = AsyncS3Store.__new__(AsyncS3Store)
        wrapped.sync, wrapped.config = store, store.config
        return wrapped
    raise TypeError(f"store must be an S3Store or AsyncS3Store, got {type(store).__name__}")


def _no_store() -> ConfigurationError:
    return ConfigurationError(
        "the input holds an Upload but the client has no store: pass store=S3Store(S3Config.from_env()) "
        "to the client or to this call"
    )


def _replace(value: Any, urls: Iterator[str]) -> Any:
    """``value`` with each ``Upload`` replaced by the next URL, in the order ``_uploads`` lists them."""
    if isinstance(value, Upload):
        return next(urls)
    if isinstance(value, dict):
        return {key: _replace(item, urls) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replace(item, urls) for item in value]
    return value


def _uploads(value: Any) -> list[Upload]:
    if isinstance(value, Upload):
        return [value]
    if isinstance(value, dict):
        return [found for item in value.values() for found in _uploads(item)]
    if isinstance(value, list | tuple):
        return [found for item in value for found in _uploads(item)]
    return []


def resolve_uploads(input: Any, store: S3Store | None) -> Any:
    """``input`` with every ``Upload`` uploaded through ``store`` and replaced by its URL; the input as
    given when it holds none. Nothing is uploaded (and nothing sent) when there is no store."""
    found = _uploads(input)
    if not found:
        return input
    if store is None:
        raise _no_store()
    urls = [store.upload(item.source, key=item.key) for item in found]
    return _replace(input, iter(urls))


async def resolve_uploads_async(input: Any, store: AsyncS3Store | None) -> Any:
    """``resolve_uploads`` for asyncio."""
    found = _uploads(input)
    if not found:
        return input
    if store is None:
        raise _no_store()
    urls = [await store.upload(item.source, key=item.key) for item in found]
    return _replace(input, iter(urls))
