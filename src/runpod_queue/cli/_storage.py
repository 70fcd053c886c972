"""`rpq upload` / `rpq download`: move a file through object storage, as a job's input or its result.

The store comes from the worker's variables (``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID``,
``BUCKET_SECRET_ACCESS_KEY``, plus ``BUCKET_NAME`` or ``--bucket``), so the same shell that runs a worker
locally can upload its inputs; or, with ``--local [PORT]``, from the emulator `rpq serve --s3` runs there
(asked over ``GET /_emulator/s3``; its stand-in credentials are used, never printed).

``rpq upload`` prints the presigned URL on stdout in full: that URL is the command's product (it goes
into a job's input); everything on stderr shows it redacted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import unquote, urlsplit

import typer

from runpod_queue._models import S3Config
from runpod_queue.cli._app import app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._options import DEFAULT_LOCAL_PORT, DURATIONS_HELP, duration_option
from runpod_queue.errors import ConfigurationError, StorageError

BucketOpt = Annotated[
    str | None,
    typer.Option("--bucket", metavar="NAME", help="The bucket (default: $BUCKET_NAME).", show_default=False),
]


LocalS3Opt = Annotated[
    int | None,
    typer.Option(
        "--local",
        metavar="[PORT]",
        min=1,
        max=65535,
        help="Use the S3 of the emulator `rpq serve --s3` runs at 127.0.0.1:PORT (PORT defaults to "
        f"{DEFAULT_LOCAL_PORT}) instead of the BUCKET_* variables; its key from $RPQ_EMULATOR_API_KEY "
        "when it has one.",
        show_default=False,
    ),
]


def _store_config(local: int | None, bucket: str | None) -> S3Config:
    """The BUCKET_* variables, or the local emulator's S3 (``--bucket`` picks another of its buckets)."""
    if local is None:
        return S3Config.from_env(bucket)
    from runpod_queue.cli._local_s3 import emulator_s3

    found = emulator_s3(local)
    if found is None:
        raise ConfigurationError(
            f"the emulator on port {local} serves no S3: start it with `rpq serve --s3 --port {local}`"
        )
    if bucket is not None:
        return S3Config(found.access_id, found.access_secret, bucket, found.endpoint_url)
    return found


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _reported() -> Iterator[None]:
    """Our errors as one line on stderr: 2 for what the user must fix, 1 for a transfer that failed."""
    try:
        yield
    except (ConfigurationError, FileNotFoundError, ValueError, TypeError) as exc:
        _fail(str(exc), 2)
    except StorageError as exc:
        _fail(str(exc), 1)


class _Bar:
    """A progress bar on stderr when it is a terminal; nothing otherwise (logs stay clean)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: Any = None
        self._task: Any = None
        if sys.stderr.isatty():
            from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

            self._progress = Progress(
                *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True
            )

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None)
        return self

    def __call__(self, done: int, total: int | None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


@app.command("upload", cls=RpqCommand, epilog=DURATIONS_HELP)
def upload(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The file to upload.", show_default=False)],
    key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY", help="The object key (default: inputs/UUID/FILE_NAME).", show_default=False
        ),
    ] = None,
    bucket: BucketOpt = None,
    expires_in: Annotated[
        float | None, duration_option(help="How long the URL works (at most 7d, the default), e.g. 1h.")
    ] = None,
    local: LocalS3Opt = None,
) -> None:
    """Upload FILE (to the BUCKET_* bucket, or --local's) and print a presigned URL for a job's input."""
    from runpod_queue._storage import S3Store, redact_url

    with _reported():
        store = S3Store(_store_config(local, bucket))
        with _Bar(file.name) as bar:
            url = store.upload(file, key=key, expires_in=expires_in, progress=bar)
    typer.echo(url)
    typer.echo(f"uploaded {file} ({file.stat().st_size} bytes): {redact_url(url)}", err=True)


@app.command("download", cls=RpqCommand)
def download(
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="A presigned URL (no credentials needed), a URL under $BUCKET_ENDPOINT_URL, or a key.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="PATH",
            help="Where to write (default: the URL's file name here).",
            show_default=False,
        ),
    ] = None,
    bucket: BucketOpt = None,
    local: LocalS3Opt = None,
) -> None:
    """Download URL (a job's result) to a file, streamed and checked."""
    from runpod_queue._storage import S3Store, redact_url

    with _reported():
        target = output or Path(unquote(urlsplit(url).path).rsplit("/", 1)[-1] or "download.bin")
        store = S3Store(_store_config(local, bucket) if local is not None else _config_for(url, bucket))
        with _Bar(target.name) as bar:
            written = store.download(url, to=target, progress=bar)
    assert isinstance(written, Path)
    typer.echo(str(written))
    typer.echo(f"downloaded {redact_url(url)} to {written} ({written.stat().st_size} bytes)", err=True)


def _config_for(url: str, bucket: str | None) -> S3Config:
    """The BUCKET_* store; a presigned URL needs none, so without the variables it still downloads."""
    try:
        return S3Config.from_env(bucket)
    except ConfigurationError:
        if "X-Amz-Signature=" in url:
            # Never used to sign: a presigned URL is fetched as it is. Placeholders satisfy S3Config.
            return S3Config("unused", "unused", "unused", "http://unused.invalid")
        raise
