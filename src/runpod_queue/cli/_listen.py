"""`rpq listen`: a signed-webhook receiver that appends every verified delivery to a JSONL file, and
`rpq webhook-url`: the signed URL to give a job so that `rpq listen` accepts its delivery."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from runpod_queue.cli._app import app
from runpod_queue.cli._duration import within
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._options import DURATIONS_HELP, duration_option
from runpod_queue.webhooks import (
    DEFAULT_EXPIRES_IN,
    MIN_SECRET_BYTES,
    TOKEN_PARAM,
    Delivery,
    MemoryWebhookStore,
    WebhookSigner,
)

SecretEnvOpt = Annotated[
    str,
    typer.Option(
        "--secret-env",
        metavar="NAME",
        help="Name of the environment variable holding the webhook secret (the secret itself never goes "
        "on a command line).",
        show_default=False,
    ),
]
_MAKE_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105 - a command
_SHOWN_CHARS = 120  # a job id or reason longer than this is cut in a log line


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _signer(secret_env: str) -> WebhookSigner:
    """The signer for the secret in ``$secret_env``, or a one-line usage error saying how to make one."""
    make_one = f'make one with: export {secret_env}="$({_MAKE_SECRET})"'
    secret = os.environ.get(secret_env)
    if not secret:
        _usage_error(f"environment variable {secret_env} is not set; {make_one}")
    try:
        return WebhookSigner(secret)
    except ValueError:  # too short to be a secret; it is not echoed, only its length
        _usage_error(
            f"the secret in {secret_env} is too short ({len(secret.encode())} bytes, at least "
            f"{MIN_SECRET_BYTES} needed); {make_one}"
        )


def _shown(text: object) -> str:
    """Sender-controlled text made safe for one log line: control characters replaced, length capped."""
    clean = "".join(char if char.isprintable() else "?" for char in str(text))
    return clean if len(clean) <= _SHOWN_CHARS else clean[: _SHOWN_CHARS - 1] + "…"


def answer_line(delivery: Delivery, client: str | None, *, detail: str | None = None) -> str:
    """The one stderr line `rpq listen` logs for an answer: ``accepted job … COMPLETED (…)``, ``repeat of
    job …`` or ``refused 401 from 127.0.0.1: webhook token expired``. Reasons never carry the token.

    ``detail`` replaces the reason of a 500 (what failed while writing, which the sender is not told)."""
    sender = _shown(client or "an unknown address")
    job = delivery.job
    if delivery.accepted and job is not None:
        what = f"job {_shown(job.id)} {_shown(job.status_text)}"
        if delivery.duplicate:
            return f"repeat of {what} from {sender} acknowledged, not written again"
        times = [
            f"{label} {value:.2f} s"
            for label, value in (("queued", job.delay_time), ("ran", job.execution_time))
            if value is not None
        ]
        return f"accepted {what} from {sender}" + (f" ({', '.join(times)})" if times else "")
    reason = detail if delivery.status_code == 500 and detail else _shown(delivery.reason)
    return f"refused {delivery.status_code} from {sender}: {reason}"


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
        self.write_error: str | None = None
        self.recovered = self._recover()
        # 0600: deliveries are job results, which may be private. An existing file keeps its mode.
        self._file = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")

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
            try:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                # Answered 500 (RunPod delivers again); the operator's log line says what failed.
                self.write_error = f"cannot write {self.path}: {exc.strerror or exc}; the sender will retry"
                raise

    def close(self) -> None:
        self._file.close()


@app.command()
def listen(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="FILE",
            help="JSONL file each verified delivery is appended to.",
            show_default=False,
        ),
    ],
    secret_env: SecretEnvOpt,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            metavar="PORT",
            min=0,
            max=65535,
            help="Port to listen on; 0 picks a free one (printed at start).",
        ),
    ] = 8787,
) -> None:
    """Receive signed RunPod webhooks; write each verified delivery once to --out.

    Give each job a URL from `rpq webhook-url` with the same --secret-env.
    Forged or expired URLs are refused (401), a URL reused for another job too
    (403); a delivery RunPod repeats is acknowledged and not written again. A line
    is on disk (fsynced) before the delivery is acknowledged. Every answer is
    logged on stderr, one line each. Stops on Ctrl-C.
    """
    import uvicorn

    from runpod_queue._net import listen_socket
    from runpod_queue._serving import guarded_config
    from runpod_queue.webhooks import WebhookReceiver, asgi_app

    signer = _signer(secret_env)
    store = MemoryWebhookStore()
    try:
        log = DeliveryLog(out, store)
    except OSError as exc:
        _usage_error(f"cannot open {out}: {exc.strerror or exc}")
    try:
        # Bound here, not by uvicorn: its bind failure is a sys.exit, and with --port 0 the port it got
        # must be known to print it (a script or test reads it from the first line on stderr).
        sock = listen_socket(host, port)
    except OSError as exc:
        log.close()
        _usage_error(str(exc))
    bound = int(sock.getsockname()[1])
    receiver = WebhookReceiver(signer, log.write, store=store, with_delivery=True)

    def log_answer(delivery: Delivery, client: str | None) -> None:
        detail = log.write_error if delivery.status_code == 500 else None
        typer.echo(answer_line(delivery, client, detail=detail), err=True)

    # This receiver faces the internet: slow or oversized requests and connection floods are bounded.
    config = guarded_config(
        asgi_app(receiver, on_answer=log_answer),
        host=host,
        port=bound,
        log_level="warning",
        access_log=False,
        ws="none",
    )
    server = uvicorn.Server(config)
    shown_host = f"[{host}]" if ":" in host else host
    address = f"http://{shown_host}:{bound}/"
    typer.echo(
        f"listening on {address} — verified deliveries → {out}"
        + (f" ({log.recovered} already there)" if log.recovered else ""),
        err=True,
    )
    typer.echo(f"a webhook URL for a job: rpq webhook-url {address} --secret-env {secret_env}", err=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
        pass
    finally:
        sock.close()
        log.close()
    typer.echo("stopped.", err=True)


_DEFAULT_EXPIRY = f"{DEFAULT_EXPIRES_IN / 86_400:g}d"


@app.command("webhook-url", epilog=DURATIONS_HELP)
def webhook_url(
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="Where the receiver is reached, e.g. http://127.0.0.1:8787/ for `rpq listen`.",
            show_default=False,
        ),
    ],
    secret_env: SecretEnvOpt,
    expires_in: Annotated[
        float | None,
        duration_option(
            "--expires-in",
            help=f"How long the URL is accepted (default {_DEFAULT_EXPIRY}, longer than a job can live: "
            "RunPod's ttl is at most 7d).",
        ),
    ] = None,
) -> None:
    """Print a signed webhook URL (one line on stdout) that `rpq listen` with the same secret accepts.

    Each call makes a fresh URL: give each job its own, e.g.
    rpq run ENDPOINT INPUT --webhook "$(rpq webhook-url URL --secret-env NAME)"
    """
    signer = _signer(secret_env)
    try:
        lifetime = within(expires_in, "--expires-in", low=1)
    except UsageProblem as exc:
        _usage_error(str(exc))
    try:
        typer.echo(signer.sign(url, expires_in=lifetime))
    except ValueError:
        _usage_error(
            f"URL must be an absolute http:// or https:// URL such as http://127.0.0.1:8787/, got {url!r}"
        )
