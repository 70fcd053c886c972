"""The body of a /run or /runsync request, parsed and checked.

Lenient by default, as RunPod is: it discards top-level keys it does not know (docs: the former
serverless/endpoints/send-requests page), and the official JS and Go SDKs send keys it does not
document (`webhookV2`, `s3Config.objectPath`). An unknown key is ignored and named in `ignored`, so the
app can warn. `strict=True` refuses it with a 400 instead, to catch typos such as `execution_timeout`.
Wrong types or out-of-range values in known fields are a 400 either way.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from runpod_queue import _contract as contract
from runpod_queue.emulator._http import HTTPError, type_name

__all__ = ["Submission"]

_POLICY_KEYS: Final = ("executionTimeout", "ttl", "lowPriority")
_S3_KEYS: Final = ("accessId", "accessSecret", "bucketName", "endpointUrl")
_BODY_KEYS: Final = ("input", "webhook", "policy", "s3Config")
_KNOWN_BODY_KEYS: Final = frozenset(_BODY_KEYS)


def _duration(policy: dict[str, Any], key: str, low: int, high: int) -> float | None:
    """`policy.<key>` in ms (the wire's unit), returned as seconds."""
    if key not in policy:
        return None
    value = policy[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise HTTPError(
            400, f"policy.{key} must be an integer number of ms, got {type_name(value)} {value!r}"
        )
    if not low <= value <= high:
        raise HTTPError(
            400,
            f"policy.{key}={int(value)} is out of range: allowed {low}..{high} ms "
            f"({low // 1000} s to 7 days)",
        )
    return int(value) / 1000


def _check_webhook(webhook: object) -> None:
    """A 400 unless `webhook` is an http(s) URL the delivery can send to: parsed here, with the same
    parser the delivery uses, so `https://[::1` is refused at /run instead of failing later unseen."""
    if not isinstance(webhook, str) or not webhook.startswith(("http://", "https://")):
        raise HTTPError(400, f'field "webhook" must be an http(s) URL string, got {webhook!r}')
    try:
        host = httpx.URL(webhook).host
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise HTTPError(
            400, f'field "webhook" is not a valid URL ({exc}): send e.g. "https://example.com/hook"'
        ) from None
    if not host:
        raise HTTPError(
            400, f'field "webhook" has no host: send e.g. "https://example.com/hook", got {webhook!r}'
        )


class Submission:
    """A /run or /runsync body; durations in seconds. `ignored` lists the unknown keys dropped (dotted
    for nested ones: `s3Config.objectPath`), in the order found."""

    __slots__ = ("execution_timeout", "ignored", "input", "low_priority", "s3_config", "ttl", "webhook")

    def __init__(self, data: dict[str, Any], *, strict: bool = False) -> None:
        self.ignored: list[str] = []
        if not _KNOWN_BODY_KEYS.issuperset(data):  # checked in C first: most bodies hold known keys only
            self._unknown(data, _BODY_KEYS, "", "in request body", strict)
        if "input" not in data:
            raise HTTPError(400, 'field "input" is required: send {"input": {...}}')
        job_input = data["input"]
        if not isinstance(job_input, dict):
            raise HTTPError(400, f'field "input" must be a JSON object, got {type_name(job_input)}')
        self.input = job_input
        webhook = data.get("webhook")
        if webhook is not None:
            _check_webhook(webhook)
        self.webhook: str | None = webhook
        self.execution_timeout: float | None = None
        self.ttl: float | None = None
        self.low_priority = False
        policy = data.get("policy")
        if policy is not None:
            if not isinstance(policy, dict):
                raise HTTPError(400, f'field "policy" must be a JSON object, got {type_name(policy)}')
            self._unknown(policy, _POLICY_KEYS, "policy.", "in policy", strict)
            self.execution_timeout = _duration(
                policy, "executionTimeout", contract.MIN_EXECUTION_TIMEOUT_MS, contract.MAX_DURATION_MS
            )
            self.ttl = _duration(policy, "ttl", contract.MIN_TTL_MS, contract.MAX_DURATION_MS)
            low = policy.get("lowPriority", False)
            if not isinstance(low, bool):
                raise HTTPError(
                    400, f"policy.lowPriority must be true or false, got {type_name(low)} {low!r}"
                )
            self.low_priority = low
        s3 = data.get("s3Config")
        self.s3_config: dict[str, str] | None = None
        if s3 is not None:
            if not isinstance(s3, dict):
                raise HTTPError(400, f'field "s3Config" must be a JSON object, got {type_name(s3)}')
            missing = [k for k in _S3_KEYS if not isinstance(s3.get(k), str) or not s3[k]]
            if missing:
                raise HTTPError(400, f"s3Config needs non-empty strings for {', '.join(missing)}")
            self._unknown(s3, _S3_KEYS, "s3Config.", "in s3Config", strict)
            self.s3_config = {k: s3[k] for k in _S3_KEYS}

    def warning(self, route: str, endpoint_id: str) -> str:
        """The warning for the keys ignored: at most 10 named, each cut to 40 characters (a header)."""
        names = [name if len(name) <= 40 else name[:37] + "..." for name in self.ignored[:10]]
        more = f" and {len(self.ignored) - 10} more" if len(self.ignored) > 10 else ""
        return (
            f"ignored unknown request key(s) {', '.join(names)}{more} on /{route} to endpoint {endpoint_id}: "
            "RunPod drops them silently (a typo? strict=True / --strict refuses them)"
        )

    def _unknown(
        self, data: dict[str, Any], known: tuple[str, ...], prefix: str, where: str, strict: bool
    ) -> None:
        unknown = [f"{prefix}{k}" for k in data if k not in known]
        if not unknown:
            return
        if strict:
            raise HTTPError(
                400,
                f"unknown field(s) {unknown} {where}; allowed: {', '.join(known)} (the emulator runs "
                "with strict=True; RunPod itself ignores unknown keys)",
            )
        self.ignored.extend(unknown)
