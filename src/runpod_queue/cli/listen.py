"""`rpq listen`: a signed-webhook receiver that appends every verified delivery to a JSONL file."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from runpod_queue.cli._app import app
from runpod_queue.webhooks import TOKEN_PARAM, Delivery, MemoryWebhookStore


def _redact(url: Any) -> Any:
    """Deliveries echo the webhook URL; its token is a capability, so it is not written to disk."""
    if isinstance(url, str) and f"{TOKEN_PARAM}=" in url:
        head, _, tail = url.partition(f"{TOKEN_PARAM}=")
        rest = tail.partition("&")
        return f"{head}{TOKEN_PARAM}=REDACTED{rest[1]}{rest[2]}"
    return url


class DeliveryLog:
    """Appends deliveries to a JSONL file; a line is flushed and fsynced before the 200 is sent."""

    def __init__(self, path: Path, store: MemoryWebhookStore) -> None:
        self.path = path
        self.store = store
        self._lock = threading.Lock()
        self.recovered = self._recover()
        self._file = path.open("ab")

    def _recover(self) -> int:
        """Reload what was accepted before a restart (dedup and nonce claims survive it), and drop a
        partial last line left by a kill mid-write: it was never acknowledged, so RunPod delivers it again."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(end)
        count = 0
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
                meta = record.get("_rpq", {})
                self.store.remember(meta.get("nonce"), str(record["id"]), str(record["status"]))
                count += 1
            except (ValueError, KeyError, AttributeError):
                continue
        return count

    def write(self, delivery: Delivery) -> None:
        record = dict(delivery.body)
        if "webhook" in record:
            record["webhook"] = _redact(record["webhook"])
        record["_rpq"] = {"nonce": delivery.nonce, "receivedAt": dt.datetime.now(dt.UTC).isoformat()}
        # Strict JSON (the receiver refuses NaN and out-of-range numbers, so this never raises).
        line = json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        job = delivery.job
        if job is not None:
            times = f"delay {job.delay_time} s, execution {job.execution_time} s"
            typer.echo(f"{job.status_text:<10} {job.id}  ({times})")

    def close(self) -> None:
        self._file.close()


@app.command()
def listen(
    out: Annotated[Path, typer.Option("--out", help="JSONL file each verified delivery is appended to.")],
    secret_env: Annotated[
        str, typer.Option("--secret-env", help="Name of the environment variable holding the webhook secret.")
    ],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0 picks a free one).")
    ] = 8787,
) -> None:
    """Receive signed RunPod webhooks (see WebhookSigner); write each verified delivery once to --out.

    Forged, expired or reused URLs are refused (401/403); a delivery repeated by RunPod is acknowledged
    and not written again. A line is on disk (fsynced) before the delivery is acknowledged.
    """
    import uvicorn

    from runpod_queue._net import listen_socket
    from runpod_queue._serving import guarded_config
    from runpod_queue.webhooks import WebhookReceiver, WebhookSigner, asgi_app

    secret = os.environ.get(secret_env)
    if not secret:
        typer.echo(
            f"error: environment variable {secret_env} is not set; export {secret_env}=<your webhook secret>",
            err=True,
        )
        raise typer.Exit(2)
    try:
        signer = WebhookSigner(secret)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    store = MemoryWebhookStore()
    try:
        log = DeliveryLog(out, store)
    except OSError as exc:
        typer.echo(f"error: cannot open {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    try:
        # Bound here, not by uvicorn: its bind failure is a sys.exit, and with --port 0 the port it got
        # must be known to print it (a script or test reads it from the first line on stderr).
        sock = listen_socket(host, port)
    except OSError as exc:
        log.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    bound = int(sock.getsockname()[1])
    receiver = WebhookReceiver(signer, log.write, store=store, with_delivery=True)
    # This receiver faces the internet: slow or oversized requests and connection floods are bounded.
    config = guarded_config(
        asgi_app(receiver), host=host, port=bound, log_level="warning", access_log=False, ws="none"
    )
    server = uvicorn.Server(config)
    shown_host = f"[{host}]" if ":" in host else host
    typer.echo(
        f"listening on http://{shown_host}:{bound}/ — verified deliveries → {out}"
        + (f" ({log.recovered} already there)" if log.recovered else ""),
        err=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        log.close()
    typer.echo("stopped.", err=True)
