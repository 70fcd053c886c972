"""Signed webhook URLs: fresh per submission, HMAC over nonce + expiry, secret never in the URL."""

from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from runpod_queue.webhooks import TOKEN_PARAM, WebhookSigner, WebhookVerificationError

SECRET = "wh-secret-7f3a9c1e5b2d4f60"


def test_each_url_has_a_fresh_token_and_keeps_the_base() -> None:
    signer = WebhookSigner(SECRET)
    first = signer.sign("https://hooks.example.com/runpod?team=a")
    second = signer.sign("https://hooks.example.com/runpod?team=a")
    assert first != second
    parts = urlsplit(first)
    query = parse_qs(parts.query)
    assert parts.netloc == "hooks.example.com" and parts.path == "/runpod" and query["team"] == ["a"]
    assert SECRET not in first
    claims = signer.verify(query[TOKEN_PARAM][0])
    assert claims.expires_at > time.time() + 7 * 86_400  # outlives RunPod's longest ttl


def test_signing_again_replaces_an_old_token() -> None:
    signer = WebhookSigner(SECRET)
    url = signer.sign(signer.sign("http://127.0.0.1:8787/"))
    assert len(parse_qs(urlsplit(url).query)[TOKEN_PARAM]) == 1


@pytest.mark.parametrize(
    "mangle,reason",
    [
        (lambda t: None, "missing"),
        (lambda t: "", "missing"),
        (lambda t: "abc", "malformed"),
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "signature"),
        (lambda t: t.replace(t.split(".")[1], str(int(t.split(".")[1]) + 1)), "signature"),
    ],
)
def test_tampered_tokens_are_refused_with_401(mangle: object, reason: str) -> None:
    signer = WebhookSigner(SECRET)
    token = signer.token()
    with pytest.raises(WebhookVerificationError, match=reason) as info:
        signer.verify(mangle(token))  # type: ignore[operator]
    assert info.value.status == 401


def test_lifetimes_are_seconds_or_timedeltas() -> None:
    now = 1_800_000_000.0
    for lifetime in (90, 90.0, timedelta(seconds=90)):
        signer = WebhookSigner(SECRET, expires_in=lifetime)
        assert signer.verify(signer.token(now=now), now=now).expires_at == now + 90
        assert signer.verify(signer.token(expires_in=lifetime, now=now), now=now).expires_at == now + 90
    with pytest.raises(ValueError, match="expires_in must be a positive number of seconds or a timedelta"):
        WebhookSigner(SECRET, expires_in=timedelta(0))
    with pytest.raises(ValueError, match="expires_in must be a positive"):
        WebhookSigner(SECRET).token(expires_in=-1)


def test_expired_and_foreign_tokens_are_refused() -> None:
    signer = WebhookSigner(SECRET)
    with pytest.raises(WebhookVerificationError, match="expired"):
        signer.verify(signer.token(expires_in=10, now=time.time() - 60))
    with pytest.raises(WebhookVerificationError, match="signature"):
        WebhookSigner("another-secret-0123456789").verify(signer.token())


def test_secret_is_kept_out_of_repr_and_weak_secrets_are_refused() -> None:
    assert SECRET not in repr(WebhookSigner(SECRET))
    with pytest.raises(ValueError, match="at least 16 bytes"):
        WebhookSigner("short")
    with pytest.raises(ValueError, match="absolute http"):
        WebhookSigner(SECRET).sign("not a url")
