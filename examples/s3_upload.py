"""Put a large result in object storage and return its URL instead of the bytes — standard library only.

RunPod hands the job's `s3Config` (`accessId`, `accessSecret`, `bucketName`, `endpointUrl`) to the worker
with the job and never echoes it back; a worker uses it for outputs too big for the 10-20 MB payload
limits. Submit with `Endpoint.run(input, s3_config=S3Config(...))`. Without an `s3Config` the result is
returned inline.

Uploads use path-style URLs (`{endpointUrl}/{bucketName}/{key}`), which S3-compatible stores (MinIO,
Cloudflare R2, Backblaze B2, Wasabi, AWS with path-style access) accept, signed with AWS Signature V4.
The region is read from an AWS endpoint host (`s3.eu-west-1.amazonaws.com`); `input.region` overrides
it (R2 wants "auto"). Input: {"text": str, "region"?: str}.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

_AWS_REGION = re.compile(r"(?:^|\.)s3[.-]([a-z0-9-]+)\.amazonaws\.com$")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign_v4(
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload_sha256: str,
    *,
    access_id: str,
    secret: str,
    region: str,
    now: dt.datetime,
) -> dict[str, str]:
    """The headers to send for an S3 request: `headers` plus host, x-amz-date, x-amz-content-sha256 and
    the SigV4 Authorization. Every given header is signed. Query strings are not supported (not needed
    for a PUT)."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_sha256
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            quote(parts.path or "/", safe="/~"),
            "",
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = dict(headers)
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_sha256
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_id}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return out


def upload(config: Mapping[str, str], key: str, body: bytes, content_type: str, region: str | None) -> str:
    """PUT `body` at `key` in the configured bucket; returns the object's URL."""
    endpoint = config["endpointUrl"].rstrip("/")
    match = _AWS_REGION.search(urlsplit(endpoint).hostname or "")
    region = region or (match.group(1) if match else "us-east-1")
    url = f"{endpoint}/{config['bucketName']}/{quote(key, safe='/')}"
    headers = sign_v4(
        "PUT",
        url,
        {"Content-Type": content_type},
        hashlib.sha256(body).hexdigest(),
        access_id=config["accessId"],
        secret=config["accessSecret"],
        region=region,
        now=dt.datetime.now(dt.UTC),
    )
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"s3Config.endpointUrl must be an http(s) URL, got {endpoint!r}")
    request = urllib.request.Request(url, data=body, method="PUT", headers=headers)  # noqa: S310 - checked
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        if response.status not in (200, 201, 204):
            raise RuntimeError(f"upload of {key} answered {response.status}")
    return url


def handler(job: dict[str, Any]) -> dict[str, Any]:
    spec = job["input"] if isinstance(job["input"], dict) else {}
    result = str(spec.get("text", "")).upper().encode()  # stands for a large generated artefact
    config = job.get("s3Config")
    if not config:
        return {"inline": result.decode(), "bytes": len(result)}
    url = upload(config, f"results/{job['id']}.txt", result, "text/plain", spec.get("region"))
    return {"url": url, "bytes": len(result)}
