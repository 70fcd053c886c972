"""The example handlers beyond what the CLI tests and the demo already run: the S3 uploader."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import ModuleType
from typing import Any

import pytest
from cli_support import EXAMPLES

from runpod_queue import Client, S3Config


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


s3_upload = _load("s3_upload")


def test_sigv4_matches_awss_published_example() -> None:
    # "GET Object" example of AWS's SigV4 documentation for S3 (header-based auth).
    headers = s3_upload.sign_v4(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {"Range": "bytes=0-9"},
        hashlib.sha256(b"").hexdigest(),
        access_id="AKIAIOSFODNN7EXAMPLE",
        secret="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        now=dt.datetime(2013, 5, 24, tzinfo=dt.UTC),
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


class _FakeS3(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(
            {"path": self.path, "body": body, "headers": {k.lower(): v for k, v in self.headers.items()}}
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def fake_s3() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _FakeS3)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_s3_uploader_puts_the_result_and_returns_its_url(fake_s3: str, client: Client) -> None:
    secret = "s3-secret-9a8b7c6d"
    ep = client.endpoint("s3_upload")  # examples/s3_upload.py, served by the CLI tests' emulator
    config = S3Config(access_id="AKID", access_secret=secret, bucket_name="results", endpoint_url=fake_s3)
    job = ep.run_sync({"text": "big result"}, s3_config=config).raise_for_status()
    inline = ep.run_sync({"text": "small"}).raise_for_status()
    assert job.output == {"url": f"{fake_s3}/results/results/{job.id}.txt", "bytes": 10}
    assert len(_FakeS3.received) == 1  # the small result came back inline, without an upload
    put = _FakeS3.received[0]
    assert put["path"] == f"/results/results/{job.id}.txt"
    assert put["body"] == b"BIG RESULT"
    assert put["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
    assert put["headers"]["x-amz-content-sha256"] == hashlib.sha256(b"BIG RESULT").hexdigest()
    assert secret not in str(put["headers"])
    assert secret not in job.to_json()  # s3Config is never echoed
    assert inline.output == {"inline": "SMALL", "bytes": 5}
