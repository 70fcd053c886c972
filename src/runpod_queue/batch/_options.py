"""Option groups for ``BatchRunner``: settings that only make sense together travel together.

Durations are seconds (a number or a ``timedelta``), checked through ``_units.seconds`` like every other
duration in the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runpod_queue._units import Duration, seconds

__all__ = ["PollOptions", "WebhookOptions"]

_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, to refuse them as a URL host


def _positive(value: Duration, name: str) -> float:
    result = seconds(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be more than 0 seconds, got {result:g}")
    return result


@dataclass(frozen=True, slots=True)
class PollOptions:
    """How results are collected by status checks: each job's interval grows with its age, within bounds.

    Args:
        concurrency: Status calls in flight at most (the client's rate limit still holds them all under
            ``/status``'s budget).
        min_interval: Seconds (or a ``timedelta``) before a job is checked again, at least.
        max_interval: Seconds before a job is checked again, at most.

    Raises:
        ValueError: ``concurrency`` below 1, an interval not above 0, or ``min_interval`` over
            ``max_interval``.
    """

    concurrency: int = 64
    min_interval: float = 0.05
    max_interval: float = 10.0

    def __init__(
        self, *, concurrency: int = 64, min_interval: Duration = 0.05, max_interval: Duration = 10.0
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"PollOptions.concurrency must be an integer >= 1, got {concurrency!r}")
        low = _positive(min_interval, "PollOptions.min_interval")
        high = _positive(max_interval, "PollOptions.max_interval")
        if low > high:
            raise ValueError(
                f"PollOptions.min_interval ({low:g} s) must not exceed max_interval ({high:g} s)"
            )
        object.__setattr__(self, "concurrency", concurrency)
        object.__setattr__(self, "min_interval", low)
        object.__setattr__(self, "max_interval", high)


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """A webhook-driven batch: every job is submitted with a signed webhook URL, and a receiver the runner
    serves on its own loop takes the deliveries as results.

    Args:
        listen: The (host, port) the receiver binds; port 0 takes a free one
            (``runner.webhook_address`` says which).
        url: The public address that reaches the receiver (a tunnel or a public host); ``None`` uses
            the receiver's own address, for an emulator or a host the endpoint reaches directly.
        secret: Signs the webhook URLs (at least 16 bytes); ``None`` generates one, kept in the journal
            so a resumed batch still verifies deliveries for jobs submitted before the restart.
        grace: Seconds after which a job whose delivery is late is polled (or twice the jobs' usual run
            time, if that is longer).

    Raises:
        ValueError: A bad address, URL or secret; ``listen`` on every interface without ``url``.
    """

    listen: tuple[str, int]
    url: str | None = None
    secret: str | None = field(default=None, repr=False)
    grace: float = 30.0

    def __init__(
        self,
        *,
        listen: tuple[str, int],
        url: str | None = None,
        secret: str | None = None,
        grace: Duration = 30.0,
    ) -> None:
        if (
            not isinstance(listen, tuple)
            or len(listen) != 2
            or not isinstance(listen[0], str)
            or isinstance(listen[1], bool)
            or not isinstance(listen[1], int)
            or not 0 <= listen[1] < 65536
        ):
            raise ValueError(
                f"WebhookOptions.listen must be (host, port) with 0 <= port < 65536, got {listen!r}"
            )
        if url is None and listen[0] in _ANY_ADDRESS:
            raise ValueError(
                f"WebhookOptions.listen binds every interface ({listen[0]!r}): pass url=, the address "
                "the endpoint posts to"
            )
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ValueError(f"WebhookOptions.url must be an http(s) URL, got {url!r}")
        if secret is not None and (not isinstance(secret, str) or len(secret.encode()) < 16):
            raise ValueError("WebhookOptions.secret must be a string of at least 16 bytes")
        object.__setattr__(self, "listen", listen)
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "secret", secret)
        object.__setattr__(self, "grace", _positive(grace, "WebhookOptions.grace"))

    def public_url(self, bound: tuple[str, int]) -> str:
        """The URL signed into each submission: ``url``, or the address the receiver got."""
        if self.url is not None:
            return self.url
        host, port = bound
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
